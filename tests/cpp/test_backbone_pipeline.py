"""A non-ResNet backbone through the whole pipeline: der-train (mobilenet_v3_small, the cheapest trunk in the
registry) on generated data -> der-export FP32, INT8, FP16 -> the parity gate vs PyTorch (der-eval --reference)
-> der-infer-cpp equal to der-infer on every variant -> a real tritonserver serving the same scores.

The model trains for seconds; with DER_TEST_CACHE=DIR its data and checkpoint are kept between runs (keyed by
RECIPE), like the session's tiny resnet18.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_cpp_parity import assert_same, both, records
from trained_cache import generated_voc, trained_model

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
RECIPE = dict(arch="mobilenet_v3_small", input_size=(64, 64), classes=4, images=300, image_size=64, epochs=3,
              batch_size=16, lr=0.01, lr_step=2, seed=0, precise_bn=1000)


def _run(cmd, timeout=600):
    env = dict(os.environ, DER_NO_PROGRESS="1")
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generated_voc(RECIPE, tmp_path_factory, seed=5, prefix="backbone-")


@pytest.fixture(scope="module")
def ckpt(data, tmp_path_factory) -> Path:
    """der-train's best checkpoint, trained with --precise-bn: MobileNetV3's BN momentum (0.01) leaves the running
    statistics of a run this short far from the weights and its eval-mode outputs nearly constant
    (train/batchnorm.py); re-estimated after every epoch, the model answers per image and INT8 calibrates real
    ranges."""
    return trained_model(RECIPE, data, tmp_path_factory, name="model", prefix="backbone-")


# Plain INT8 (minmax U8S8) of this trained MobileNetV3 misses der-export's INT8 verification tolerance (mean
# |Δlogit| ~0.8 > 0.5: depthwise convs and squeeze-excitation quantize badly, and INT8 does not pay off on such
# trunks on ORT CPU anyway, 0.84x FP32). der-export refuses it in one line naming the way out; the tests check
# that refusal, and a run where the export passes checks the file instead.
INT8_REFUSAL = "int8 u8s8 ONNX vs PyTorch: outputs differ beyond tolerance"
INT8_FIX = "keep the sensitive layers in floating point with --budget-data DATA, or deploy the FP32/FP16 file"


def _export(cmd, out: Path) -> Path:
    proc = _run(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.exists(), proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def fp32(ckpt, tmp_path_factory) -> Path:
    """der-export's CLI: the FP32 ONNX, verified against PyTorch."""
    out = tmp_path_factory.mktemp("bb-export") / "der.onnx"
    proc = _run([BIN / "der-export", ckpt, "-o", out, "--batch", "1:8:16"])
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def int8_cli(ckpt, data, tmp_path_factory) -> Path:
    """der-export --int8: U8S8 calibrated on the training images, verified against PyTorch."""
    out = tmp_path_factory.mktemp("bb-int8") / "der.onnx"
    cmd = [BIN / "der-export", ckpt, "-o", out, "--int8", "--calib", data / "JPEGImages", "--calib-max", 48,
           "--batch", "1:8:16"]
    proc = _run(cmd)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert INT8_REFUSAL in lines[-1] and INT8_FIX in lines[-1] and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert not out.with_name("der.int8.onnx").exists()  # a refused file is never written
        return None
    return _export(cmd, out.with_name("der.int8.onnx"))


@pytest.fixture(scope="module")
def int8(fp32, data) -> Path:
    """The same U8S8 quantization without der-export's accuracy gate: the runtimes must agree on it whatever its
    accuracy (MobileNetV3's Q/DQ graph: depthwise convs, HardSwish, squeeze-excitation)."""
    from der_deploy.export.quantize import quantize_int8

    return quantize_int8(fp32, fp32.with_name("der.int8.onnx"), data / "JPEGImages", calib_max=48)


@pytest.fixture(scope="module")
def fp16(fp32) -> Path:
    """der-export --fp16 from the FP32 ONNX (verified against it in ONNX Runtime)."""
    src = fp32.parent / "fp16" / "der.onnx"
    src.parent.mkdir()
    shutil.copyfile(fp32, src)
    return _export([BIN / "der-export", src, "--fp16"], src.with_name("der.fp16.onnx"))


@pytest.fixture(scope="module")
def images(data) -> list[Path]:
    from der_deploy.datasets import open_dataset

    return list(open_dataset(data, "test").paths)


def test_trained_checkpoint_is_the_backbone(ckpt, fp32, int8):
    from der_deploy.artifact import read_card
    from der_deploy.train.checkpoint import read_checkpoint

    saved = read_checkpoint(ckpt)
    assert saved["arch"] == "mobilenet_v3_small" and saved["config"]["arch"] == "mobilenet_v3_small"
    assert saved["config"]["precise_bn"] == RECIPE["precise_bn"]
    assert saved["metrics"]["map"] > 0.55  # chance is ~0.47 on this test split; a collapsed eval-mode trunk sits there
    for f in (fp32, int8):
        card = read_card(f)
        assert card.arch == "mobilenet_v3_small" and tuple(card.input_size) == RECIPE["input_size"]


@pytest.mark.parametrize("variant", ["fp32", "int8_cli", "fp16"])
def test_der_eval_parity_gate_vs_pytorch(variant, ckpt, data, tmp_path, request):
    """der-export's FP32 and FP16 files within their precision's budget (FP32 0.05, FP16 0.3 mAP points). Plain INT8
    of this trunk sits at the edge of its 1.0 pt budget (1.05 in one CI run, under it in others): there the gate's
    verdict must agree with the ΔmAP it reports, and a failure is one line."""
    engine = request.getfixturevalue(variant)
    if engine is None:  # der-export refused plain INT8, checked by int8_cli; nothing was written to evaluate
        return
    report = tmp_path / "eval.json"
    proc = _run([BIN / "der-eval", "--engine", engine, data, "--reference", ckpt, "--json", report])
    parity = json.loads(report.read_text())["parity"]
    within = abs(parity["delta_map_pt"]) <= parity["budget_pt"]
    if variant == "int8_cli":
        assert proc.returncode == (0 if within else 1) and parity["passed"] == within, proc.stderr[-2000:]
        if not within:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1 and f"exceeds the int8 budget of {parity['budget_pt']:g} pt" in lines[0], lines
        return
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert parity["passed"] and within
    if variant == "fp32":
        assert parity["max_abs_score_diff"] < 1e-4


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_cpp_equals_python(variant, der_infer_cpp, images, tmp_path, request):
    """der-infer-cpp and der-infer on the same engine and files: same paths, labels, scores within 1e-5."""
    engine = request.getfixturevalue(variant)
    (prc, ptext, perr), (crc, ctext, cerr) = both(der_infer_cpp, engine, images, tmp_path)
    assert prc == crc == 0, (perr[-2000:], cerr[-2000:])
    py, cpp = records(ptext, "jsonl"), records(ctext, "jsonl")
    assert len(py) == len(images)
    assert_same(py, cpp)
    scores = np.array([list(r["scores"].values()) for r in py])
    assert scores.std(axis=0).max() > 1e-3  # the trained trunk answers per image, not one constant row


# -- Triton: the python-backend repository (what the bundled CPU server can run) of the FP32 export --

def _triton():
    from der_deploy.serve.server import ServeError, find_server

    try:
        server = find_server()
    except ServeError as err:
        pytest.skip(f"no tritonserver ({err}); `make test` fetches one with `der-serve install`")
    explicit = os.environ.get("DER_TRITON_PYTHON")
    candidates = [Path(explicit)] if explicit else []
    up = server.binary.resolve().parents
    if len(up) > 4:  # der-serve install's layout: CACHE/pytriton-X/pytriton/tritonserver/bin/tritonserver
        candidates.append(up[4] / "stub-env" / "bin" / "python")
    python = next((c for c in candidates if c.exists()), None)
    if python is None:
        pytest.skip("no Python environment for the Triton Python backend; run `der-serve install`")
    return server, python


def test_triton_serves_the_same_scores(fp32, images, tmp_path):
    pytest.importorskip("tritonclient.http")
    import tritonclient.http as httpclient

    from der_deploy.runtime.predictor import Predictor
    from der_deploy.serve.repository import write_repository
    from der_deploy.serve.server import TritonServer, free_ports

    install, python = _triton()
    repo = tmp_path / "repo"
    write_repository(fp32, repo, backend="python", max_batch=8)
    files = images[:16]
    with Predictor(fp32) as p:
        local = p.predict(files)
    http, grpc, metrics = free_ports(3)
    with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, server=install.binary,
                      python=python) as srv:
        srv.wait_ready(timeout=150)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}", network_timeout=60)
        got = []
        for start in range(0, len(files), 8):  # max_batch 8
            arr = np.array([f.read_bytes() for f in files[start:start + 8]], dtype=object).reshape(-1, 1)
            inp = httpclient.InferInput("image", list(arr.shape), "BYTES")
            inp.set_data_from_numpy(arr)
            res = client.infer("der_e2e", [inp])
            got.append((res.as_numpy("scores"), res.as_numpy("labels")))
    scores, labels = np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
    classes = list(local[0].scores)
    want = np.array([[r.scores[c] for c in classes] for r in local], dtype=np.float32)
    assert scores.shape == want.shape == (16, RECIPE["classes"])
    np.testing.assert_allclose(scores, want, rtol=0, atol=1e-5)
    assert [[classes[i] for i in np.flatnonzero(row)] for row in labels] == [
        sorted(r.labels, key=classes.index) for r in local]
