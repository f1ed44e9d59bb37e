"""OpenVINO runner on the trained tiny model: parity with ONNX Runtime and PyTorch, the FP16 / INT8 files, precision
refusals (never a silent downgrade), throughput == latency, the model cache, der-infer wiring, missing package.

Speed is never asserted, and AMX is never assumed: where the CPU has no native BF16 the bf16 tests check the refusal.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from der_deploy.errors import BackendUnavailable, EngineError

pytestmark = pytest.mark.slow
ov = pytest.importorskip("openvino")  # the [dev] extra installs it

from der_deploy.backends.onnxruntime.runner import OnnxRuntimeRunner  # noqa: E402
from der_deploy.backends.openvino import cpu as cpu_mod  # noqa: E402
from der_deploy.backends.openvino import runner as ov_mod  # noqa: E402
from der_deploy.backends.openvino.core import INSTALL_HINT  # noqa: E402
from der_deploy.backends.openvino.runner import OpenVinoRunner  # noqa: E402
from der_deploy.backends.registry import open_runner  # noqa: E402

N_IMAGES = 96  # of the synthetic test split: enough for label-agreement fractions, cheap on 2 cores
# Measured on the trained tiny model (resnet18/64 px, first 96 test images), OpenVINO 2026.4 vs ONNX Runtime 1.32 on
# the same file: FP16 file max |dscore| 9.5e-7, 0 of 96 label sets differ (both compute its convs in FP32 here);
# INT8 file max |dscore| 0.038, 6 of 96 label sets differ -- two different sets of INT8 kernels (against ORT FP32 on
# all 240 test images: OpenVINO INT8 0.034 / 2.9 % of label sets, ORT INT8 0.046 / 5.8 %). Bounds: about 2x that.
BOUNDS = {"fp16": (1e-3, 0.02), "int8": (0.08, 0.15)}  # (max |dscore|, fraction of images whose labels differ)


def _has_native(precision: str) -> bool:
    return cpu_mod.NATIVE[precision][1] in cpu_mod.openvino_capabilities()


@pytest.fixture(scope="module")
def test_batch(synth_voc, tiny_onnx):
    from der_deploy.artifact.files import read_card
    from der_deploy.datasets import open_dataset
    from der_deploy.images import load_and_preprocess, stack

    card = read_card(tiny_onnx)
    paths = open_dataset(synth_voc, "test").paths[:N_IMAGES]
    return stack([load_and_preprocess(p, card) for p in paths]), card, paths


def _run(runner, x: np.ndarray) -> dict[str, np.ndarray]:
    with runner:
        return runner.infer({"images": x})


def _labels(scores: np.ndarray, thresholds) -> list[frozenset]:
    return [frozenset(np.flatnonzero(row >= np.asarray(thresholds))) for row in scores]


def test_fp32_matches_onnxruntime_and_pytorch(tiny_onnx, trained_ckpt, test_batch):
    import torch

    from der_deploy.train.checkpoint import load_checkpoint

    x, _, _ = test_batch
    runner = OpenVinoRunner(tiny_onnx, threads=2)
    with runner:
        got = runner.infer({"images": x})
        info = runner.describe()
    ref = _run(OnnxRuntimeRunner(tiny_onnx), x)
    assert set(got) == set(ref) == {"logits", "scores", "cadm"}
    for name in got:
        assert got[name].dtype == np.float32 and got[name].shape == ref[name].shape
    assert np.abs(got["scores"] - ref["scores"]).max() <= 1e-4
    assert np.abs(got["logits"] - ref["logits"]).max() <= 1e-3
    model, _ = load_checkpoint(trained_ckpt)
    with torch.inference_mode():
        torch_scores = torch.sigmoid(model(torch.from_numpy(x)).logits).numpy()
    assert np.abs(got["scores"] - torch_scores).max() <= 1e-4
    # what ran, read back from the compiled model
    assert info["precision"] == "fp32" and info["execution_devices"] == ["CPU"] and info["device"] == "CPU"
    assert info["mode"] == "latency" and info["requests"] == 1 and info["threads"] == 2
    assert set(info["compute_layers"]) == {"fp32"} and info["compute_layers"]["fp32"] >= 20  # resnet18: 20 convs + fc
    assert info["version"] == ov.__version__.split("-")[0]
    assert not runner.is_active and runner.summary() == f"OpenVINO {'.'.join(info['version'].split('.')[:2])} CPU fp32, 1 request"
    with pytest.raises(EngineError, match="never activated"):
        OpenVinoRunner(tiny_onnx).describe()


@pytest.mark.parametrize("kind", ["fp16", "int8"])
def test_fp16_and_int8_files_agree_with_onnxruntime(variants, test_batch, kind):
    x, card, _ = test_batch
    runner = OpenVinoRunner(variants[kind], threads=2)
    with runner:
        got = runner.infer({"images": x})["scores"]
        info = runner.describe()
    ref = _run(OnnxRuntimeRunner(variants[kind]), x)["scores"]
    max_diff, max_flips = BOUNDS[kind]
    flips = np.mean([a != b for a, b in zip(_labels(got, card.thresholds), _labels(ref, card.thresholds))])
    assert np.abs(got - ref).max() <= max_diff, f"{kind}: max |dscore| {np.abs(got - ref).max():.4g}"
    assert flips <= max_flips, f"{kind}: {flips:.1%} of images got other labels than on ONNX Runtime"
    assert info["precision"] == "fp32"  # the hint: what the non-quantized part runs in
    if kind == "int8":  # the Q/DQ layers run as INT8 kernels, not dequantized FP32
        layers = info["compute_layers"]
        assert layers.get("int8", 0) >= 0.8 * sum(layers.values()), layers
        assert "int8" in runner.summary()


def test_bf16_runs_natively_or_is_refused_in_one_line(tiny_onnx, test_batch):
    x, _, _ = test_batch
    runner = OpenVinoRunner(tiny_onnx, precision="bf16")
    if _has_native("bf16"):
        with runner:
            got = runner.infer({"images": x})["scores"]
            info = runner.describe()
        assert info["precision"] == "bf16" and info["compute_layers"].get("bf16", 0) > 0
        ref = _run(OpenVinoRunner(tiny_onnx), x)["scores"]
        assert np.abs(got - ref).max() <= 0.02
        return
    with pytest.raises(BackendUnavailable) as err:
        runner.activate()
    msg = str(err.value)
    assert "\n" not in msg and str(tiny_onnx) in msg
    assert "AMX-BF16 or AVX-512 BF16" in msg and "--precision fp32" in msg
    assert not runner.is_active


def test_a_precision_openvino_did_not_compile_is_refused(tiny_onnx, monkeypatch):
    """OpenVINO quietly compiles f32 when the CPU lacks BF16: the read-back check must catch it."""
    if _has_native("bf16"):
        pytest.skip("this CPU runs bf16 natively; the read-back matches (checked in the test above)")
    real = ov_mod.openvino_capabilities
    monkeypatch.setattr(ov_mod, "openvino_capabilities", lambda core=None: [*real(core), "BF16"])  # pass the pre-check
    with pytest.raises(BackendUnavailable, match=r"asked OpenVINO for bf16 but it compiled fp32"):
        OpenVinoRunner(tiny_onnx, precision="bf16").activate()


@pytest.mark.parametrize("n", [1, 3, 17])
def test_throughput_mode_equals_latency_mode(tiny_onnx, test_batch, n):
    x = test_batch[0][:n]
    lat = _run(OpenVinoRunner(tiny_onnx), x)
    runner = OpenVinoRunner(tiny_onnx, mode="throughput")
    with runner:
        thr = runner.infer({"images": x})
        info = runner.describe()
        parts = runner.last_parts  # how many requests this batch was split over
    assert info["mode"] == "throughput" and info["requests"] >= 1
    assert parts == min(n, info["requests"])
    for name in lat:
        assert thr[name].shape == lat[name].shape
        np.testing.assert_allclose(thr[name], lat[name], rtol=0, atol=1e-6)


def test_model_cache_is_written_then_loaded(tiny_onnx, test_batch, tmp_path, monkeypatch):
    x = test_batch[0][:4]
    cache = tmp_path / "ov-cache"
    first = OpenVinoRunner(tiny_onnx, cache_dir=cache)
    with first:
        a = first.infer({"images": x})
        assert first.describe()["loaded_from_cache"] is False
    blobs = [p for p in cache.rglob("*") if p.is_file()]
    assert blobs, "no cache written"
    monkeypatch.setenv("DER_OV_CACHE_DIR", str(cache))  # the default comes from the environment
    second = OpenVinoRunner(tiny_onnx)
    with second:
        b = second.infer({"images": x})
        info = second.describe()
    assert info["loaded_from_cache"] is True and info["cache_dir"] == str(cache) and "cached" in second.summary()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    monkeypatch.delenv("DER_OV_CACHE_DIR")
    with OpenVinoRunner(tiny_onnx) as third:
        assert third.describe()["cache_dir"] is None and third.describe()["loaded_from_cache"] is False


def test_cache_never_serves_a_replaced_model(make_tiny, tmp_path):
    """A model replaced at the same path by one of the same size and mtime (a retrain exported within the same
    second, or files with fixed times) must run the new weights: OpenVINO's own cache key would hit the old blob."""
    import os

    path, cache = tmp_path / "m.onnx", tmp_path / "cache"
    old = make_tiny(path, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 3, *old.card.input_size)).astype(np.float32)
    stamp = os.stat(path).st_mtime_ns
    with OpenVinoRunner(path, cache_dir=cache) as r:
        np.testing.assert_allclose(r.infer({"images": x})["logits"], old.reference(x)["logits"], atol=1e-4)
    size = path.stat().st_size
    new = make_tiny(path, seed=1)
    os.utime(path, ns=(stamp, stamp))
    assert path.stat().st_size == size and path.stat().st_mtime_ns == stamp  # what OpenVINO's key looks at
    with OpenVinoRunner(path, cache_dir=cache) as r:
        got = r.infer({"images": x})["logits"]
        assert r.describe()["loaded_from_cache"] is False  # a new content: compiled, not the old blob
    np.testing.assert_allclose(got, new.reference(x)["logits"], atol=1e-4)
    assert np.abs(got - old.reference(x)["logits"]).max() > 1e-2
    with OpenVinoRunner(path, cache_dir=cache) as r:  # and the new content is cached in its turn
        assert r.describe()["loaded_from_cache"] is True


def test_registry_and_predictor_options(tiny_onnx, tmp_path, test_batch):
    from der_deploy.runtime.predictor import Predictor

    assert isinstance(open_runner(tiny_onnx, backend="openvino"), OpenVinoRunner)
    assert isinstance(open_runner(tiny_onnx), OnnxRuntimeRunner)  # auto stays ONNX Runtime for .onnx
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"\0" * 16)
    cases = [(dict(engine_path=plan, backend="openvino"), "OpenVINO cannot run"),
             (dict(engine_path=tiny_onnx, backend="openvino", providers="cpu"), "--providers applies to ONNX Runtime"),
             (dict(engine_path=tiny_onnx, backend="ort", precision="bf16"), "precision applies to OpenVINO only"),
             (dict(engine_path=tiny_onnx, precision="fp32"), "precision applies to OpenVINO only"),
             (dict(engine_path=tiny_onnx, backend="openvino", precision="int4"), "unknown precision 'int4'")]
    for kwargs, words in cases:
        with pytest.raises(EngineError) as err:
            open_runner(**kwargs)
        assert words in str(err.value) and "\n" not in str(err.value)
    x, _, _ = test_batch
    with Predictor(tiny_onnx, backend="openvino", precision="fp32", ov_mode="throughput", workers=0) as pred:
        scores = pred.scores(x[:5])
        assert pred.backend_summary.startswith(f"OpenVINO {'.'.join(ov.__version__.split('.')[:2])} CPU fp32, ")
    with Predictor(tiny_onnx, workers=0) as pred:
        np.testing.assert_allclose(scores, pred.scores(x[:5]), atol=1e-4)
        assert pred.backend_summary.startswith("ONNX Runtime ")


def _infer(*args):
    from der_deploy.cli.infer import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_der_infer_openvino_equals_ort(tiny_onnx, test_batch, tmp_path):
    _, card, paths = test_batch
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in paths[:20]:
        (folder / p.name).symlink_to(p)
    runs = {b: _infer("--engine", tiny_onnx, folder, "--format", "jsonl", "--backend", b, "--workers", "0")
            for b in ("ort", "openvino")}
    for b, res in runs.items():
        assert res.exit_code == 0, f"{b}: {res.stderr}"
    recs = {b: [json.loads(line) for line in res.stdout.splitlines()] for b, res in runs.items()}
    assert [r["path"] for r in recs["ort"]] == [r["path"] for r in recs["openvino"]] and len(recs["ort"]) == 20
    for a, b in zip(recs["ort"], recs["openvino"]):
        assert a["labels"] == b["labels"]
        assert max(abs(a["scores"][c] - b["scores"][c]) for c in card.classes) <= 1e-4
    # the summary line says what ran: a folder runs in throughput mode
    summary = runs["openvino"].stderr.strip().splitlines()[-1]
    with OpenVinoRunner(tiny_onnx, mode="throughput") as probe:
        n = probe.describe()["requests"]
    assert f"img/s engine-only on OpenVINO {'.'.join(ov.__version__.split('.')[:2])} CPU fp32, {n} request" in summary
    assert "img/s engine-only on ONNX Runtime " in runs["ort"].stderr
    one = _infer("--engine", tiny_onnx, paths[0], "--backend", "openvino", "--precision", "fp32", "--format", "jsonl")
    assert one.exit_code == 0 and "CPU fp32, 1 request (" in one.stderr  # a single image: latency mode


def test_der_infer_precision_needs_openvino(tiny_onnx, test_batch):
    path = test_batch[2][0]
    for extra in (["--backend", "ort"], []):
        res = _infer("--engine", tiny_onnx, path, "--precision", "bf16", *extra)
        errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
        assert res.exit_code == 2 and res.stdout == ""
        assert len(errors) == 1 and "--precision applies to --backend openvino only" in errors[0]


def test_der_infer_bf16_refusal_or_run(tiny_onnx, test_batch):
    res = _infer("--engine", tiny_onnx, test_batch[2][0], "--backend", "openvino", "--precision", "bf16")
    if _has_native("bf16"):
        assert res.exit_code == 0 and "CPU bf16, 1 request" in res.stderr
    else:
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "--precision fp32" in lines[0]


def test_missing_openvino_is_one_line(tiny_onnx, test_batch, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` sees when it is not installed
    runner = open_runner(tiny_onnx, backend="openvino")  # building the runner never imports openvino
    with pytest.raises(BackendUnavailable) as err:
        runner.activate()
    assert str(err.value) == INSTALL_HINT == "OpenVINO is not installed; pip install 'der-deploy[openvino]'"
    assert cpu_mod.openvino_capabilities() is None
    res = _infer("--engine", tiny_onnx, test_batch[2][0], "--backend", "openvino")
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {INSTALL_HINT}"


def test_corrupt_or_missing_file_is_one_line(tmp_path, tiny_onnx, capfd):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny_onnx.read_bytes()[:100_000])
    for path, words in [(truncated, "not a valid ONNX model"), (tmp_path / "missing.onnx", "no such ONNX file")]:
        with pytest.raises(EngineError) as err:
            OpenVinoRunner(path).activate()
        assert str(err.value).startswith(f"{path}: {words}") and "\n" not in str(err.value)
    assert "GraphDef" not in capfd.readouterr().err  # OpenVINO never got to probe its frontends
