"""der-infer-cpp --backend openvino against OpenVINO from Python on the same trained engine and the same files.

The reference is OpenVINO's own Python API on der_deploy's preprocessed tensors (independent of both CLIs), and
`der-infer --backend openvino` end to end: the same records, scores within 1e-5 at FP32. The FP16 and INT8 (Q/DQ)
files der-export writes run unchanged. bf16 is checked by what this CPU has: the one-line refusal where OpenVINO
lists no BF16 (never a silent FP32 run), else the compiled precision in the summary. --mode throughput gives the
records of latency mode; --cache-dir fills a cache that a second run loads with identical records. Speed is never
asserted.
Skips only when the C++ build lacks OpenVINO locally; in CI (CI=true) that is a failure.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpp_corpus import make_bad, make_photos
from der_deploy.backends.openvino.core import shared_core  # one Core per process (see there)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
try:  # the build takes OpenVINO from this same wheel (scripts/cpp_build.sh); the [dev] extra installs it
    import openvino  # noqa: F401
except ImportError:
    if IN_CI:
        raise
    pytest.skip("openvino is not installed (pip install -e '.[dev]'); the C++ build then has no OpenVINO either",
                allow_module_level=True)

PY_INFER = Path(sys.executable).with_name("der-infer")
TOL = 1e-5
# Same runtime on both sides: only batch composition differs (der-infer-cpp batches by 8, the reference runs all
# images at once). Measured identical (max |dscore| 0) on AVX2; INT8 gets room for other CPUs' batch blocking.
VARIANT_TOL = {"fp16": 1e-5, "int8": 1e-4}


def run(cmd, cwd=None, timeout=600, **env_extra):
    env = {k: v for k, v in os.environ.items() if k != "DER_OV_CACHE_DIR"}  # a developer's cache stays out
    env.update(DER_NO_PROGRESS="1", **env_extra)
    return subprocess.run([str(c) for c in cmd], capture_output=True, timeout=timeout, cwd=cwd, env=env)


def cpu_has(capability: str) -> bool:
    return capability in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def cpp_ov(der_infer_cpp, tiny_onnx, synth_voc, tmp_path_factory):
    """der-infer-cpp, built with OpenVINO (skip locally / fail in CI otherwise, as tests/cpp/conftest.py)."""
    one = sorted((synth_voc / "JPEGImages").glob("*.jpg"))[0]
    proc = run([der_infer_cpp, "--engine", tiny_onnx, "--backend", "openvino", one])
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0 and "built without OpenVINO" in err:
        if IN_CI:
            pytest.fail(f"der-infer-cpp lacks OpenVINO in CI: {err.strip()}")
        pytest.skip("the C++ SDK was built without OpenVINO; pip install openvino into .venv and run `make cpp`")
    assert proc.returncode == 0, err
    return der_infer_cpp


@pytest.fixture(scope="module")
def files(synth_voc, tmp_path_factory) -> list[Path]:
    """Demo JPEGs plus photo-like camera files (EXIF orientations, progressive, subsampling, PNG)."""
    photos = make_photos(tmp_path_factory.mktemp("cpp-ov"))
    demo = sorted((synth_voc / "JPEGImages").glob("*.jpg"))[:60]
    return demo + sorted(p for p in photos.rglob("*") if p.is_file())


def cpp_records(exe, engine, inputs, tmp_path, *opts, name="cpp", **env) -> tuple[list[dict], str]:
    out = tmp_path / f"{name}.jsonl"
    proc = run([exe, "--engine", engine, "--backend", "openvino", *inputs, *opts, "-o", out], **env)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()], err


def python_openvino(engine: Path, paths: list[Path], precision: str = "f32"):
    """Probabilities (N, C) from OpenVINO's Python API on der_deploy's preprocessing, and the card."""
    from der_deploy.artifact.files import read_card
    from der_deploy.images import load_and_preprocess, stack
    from der_deploy.runtime.predictor import sigmoid

    card = read_card(engine)
    x = stack([load_and_preprocess(p, card) for p in paths])
    core = shared_core()
    compiled = core.compile_model(core.read_model(str(engine)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"})
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == precision
    names = {name for port in compiled.outputs for name in port.get_names()}
    out = compiled.create_infer_request().infer({"images": x})
    if "scores" in names:
        return np.asarray(out[compiled.output("scores")], dtype=np.float32), card
    return sigmoid(np.asarray(out[compiled.output("logits")])), card


def expected_labels(probs: np.ndarray, card) -> list[str]:
    from der_deploy.runtime.predictor import score_order

    return [card.classes[i] for i in score_order(probs) if float(probs[i]) >= card.thresholds[i]]


def compare(cpp: list[dict], paths: list[Path], probs: np.ndarray, card, tol: float) -> None:
    """Every difference at once: path order, then labels and worst |dscore| per record."""
    assert [r["path"] for r in cpp] == [str(p) for p in paths]
    diffs = []
    for rec, row in zip(cpp, probs):
        assert "error" not in rec, rec
        assert list(rec["scores"]) == card.classes
        got = np.array([rec["scores"][c] for c in card.classes], dtype=np.float64)
        worst = float(np.max(np.abs(got - row.astype(np.float64))))
        if worst > tol:
            diffs.append((rec["path"], f"scores differ by {worst:.3g}"))
        elif rec["labels"] != expected_labels(row, card):
            diffs.append((rec["path"], "labels", rec["labels"], expected_labels(row, card)))
    assert not diffs, f"{len(diffs)} of {len(cpp)} records differ:\n" + "\n".join(map(repr, diffs))


def test_fp32_scores_equal_python_openvino(cpp_ov, tiny_onnx, files, tmp_path):
    cpp, err = cpp_records(cpp_ov, tiny_onnx, files, tmp_path)
    probs, card = python_openvino(tiny_onnx, files)
    compare(cpp, files, probs, card, TOL)
    summary = [ln for ln in err.splitlines() if "img/s end-to-end" in ln]
    assert len(summary) == 1 and " img/s engine-only on OpenVINO " in summary[0], err
    assert " CPU fp32, latency, 1 request (" in summary[0], err


@pytest.mark.parametrize("opts", [["--batch-size", "3", "--workers", "0"], ["--precision", "fp32", "--threads", "1"]],
                         ids=["batch3-inline", "explicit-fp32-1-thread"])
def test_batching_and_threads_do_not_change_scores(cpp_ov, tiny_onnx, files, tmp_path, opts):
    cpp, _ = cpp_records(cpp_ov, tiny_onnx, files[:25], tmp_path, *opts)
    probs, card = python_openvino(tiny_onnx, files[:25])
    compare(cpp, files[:25], probs, card, TOL)


def test_records_equal_der_infer_openvino_end_to_end(cpp_ov, tiny_onnx, synth_voc, tmp_path):
    from test_cpp_parity import assert_same, records  # the parity rules der-infer-cpp already meets on ORT

    help_text = run([PY_INFER, "--help"]).stdout.decode()
    if "openvino" not in help_text:  # the Python runner (issue 16 item 1): required in CI
        (pytest.fail if IN_CI else pytest.skip)("der-infer has no --backend openvino")
    photos = make_photos(tmp_path / "inputs")
    bad, fifo = make_bad(tmp_path / "inputs")
    inputs = [synth_voc / "JPEGImages", photos, bad, fifo]
    out = {}
    for name, exe in (("py", PY_INFER), ("cpp", cpp_ov)):
        target = tmp_path / f"{name}.jsonl"
        proc = run([exe, "--engine", tiny_onnx, "--backend", "openvino", *inputs, "-o", target])
        assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
        out[name] = records(target.read_text(encoding="utf-8"), "jsonl")
    assert len(out["py"]) > 800
    assert_same(out["py"], out["cpp"])


@pytest.fixture(scope="module")
def variants(tiny_onnx, synth_voc, tmp_path_factory):
    from der_deploy.export.precision import convert_fp16
    from der_deploy.export.quantize import quantize_int8

    out = tmp_path_factory.mktemp("cpp-ov-variants")
    return {"fp16": convert_fp16(tiny_onnx, out / "tiny.fp16.onnx"),
            "int8": quantize_int8(tiny_onnx, out / "tiny.int8.onnx", synth_voc / "JPEGImages", calib_max=64)}


@pytest.mark.parametrize("kind", ["fp16", "int8"])
def test_fp16_and_int8_files_run_unchanged(cpp_ov, variants, files, tmp_path, kind):
    engine = variants[kind]
    cpp, _ = cpp_records(cpp_ov, engine, files[:40], tmp_path)
    probs, card = python_openvino(engine, files[:40])
    compare(cpp, files[:40], probs, card, VARIANT_TOL[kind])


def test_bf16_runs_natively_or_is_refused_in_one_line(cpp_ov, tiny_onnx, files, tmp_path):
    out = tmp_path / "bf16.jsonl"
    proc = run([cpp_ov, "--engine", tiny_onnx, "--backend", "openvino", "--precision", "bf16", *files[:10], "-o", out])
    err = proc.stderr.decode("utf-8", "replace")
    if cpu_has("BF16"):
        assert proc.returncode == 0, err
        assert " CPU bf16, latency, 1 request (" in err, err
        cpp = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        probs, _ = python_openvino(tiny_onnx, files[:10])
        worst = max(abs(r["scores"][c] - float(p)) for r, row in zip(cpp, probs) for c, p in zip(r["scores"], row))
        assert worst < 0.05, worst  # bf16 keeps ~3 significant digits
    else:
        assert proc.returncode == 2, err
        assert err.splitlines() == [err.strip()], err  # exactly one line, nothing else
        assert err.startswith(f"error: {tiny_onnx}: this CPU has no native bf16 ("), err
        assert "use --precision fp32" in err
        assert not out.exists()


def test_precision_usage_errors(cpp_ov, tiny_onnx, files):
    proc = run([cpp_ov, "--engine", tiny_onnx, "--backend", "openvino", "--precision", "int8", files[0]])
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == ("error: invalid value for --precision: 'int8' is not one of 'fp32', "
                                            "'bf16', 'fp16'")
    proc = run([cpp_ov, "--engine", tiny_onnx, "--precision", "bf16", files[0]])
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == "error: --precision applies to --backend openvino only"


def summary_of(err: str) -> str:
    lines = [ln for ln in err.splitlines() if "img/s end-to-end" in ln]
    assert len(lines) == 1, err
    return lines[0]


def test_throughput_mode_gives_the_records_of_latency_mode(cpp_ov, tiny_onnx, files, tmp_path):
    latency, _ = cpp_records(cpp_ov, tiny_onnx, files, tmp_path, name="latency")
    throughput, err = cpp_records(cpp_ov, tiny_onnx, files, tmp_path, "--mode", "throughput", name="throughput")
    compiled = shared_core().compile_model(str(tiny_onnx), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    n = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    assert f" CPU fp32, throughput, {n} request{'s' if n != 1 else ''} (" in summary_of(err), err
    probs, card = python_openvino(tiny_onnx, files)
    compare(throughput, files, probs, card, TOL)
    assert [r["path"] for r in throughput] == [r["path"] for r in latency]
    assert [r["labels"] for r in throughput] == [r["labels"] for r in latency]
    worst = max(abs(t["scores"][c] - s["scores"][c]) for t, s in zip(throughput, latency) for c in card.classes)
    assert worst <= TOL, worst


def test_cache_dir_is_filled_then_loaded_with_identical_records(cpp_ov, tiny_onnx, files, tmp_path):
    cache = tmp_path / "ov-cache" / "nested"
    first, err1 = cpp_records(cpp_ov, tiny_onnx, files[:20], tmp_path, "--cache-dir", cache, name="first")
    blobs = [p for p in cache.rglob("*") if p.is_file()]  # in one subfolder per model content
    assert blobs and ", cached" not in summary_of(err1), err1
    second, err2 = cpp_records(cpp_ov, tiny_onnx, files[:20], tmp_path, "--cache-dir", cache, name="second")
    assert summary_of(err2).split(" (")[0].endswith(", cached"), err2
    assert (tmp_path / "first.jsonl").read_bytes() == (tmp_path / "second.jsonl").read_bytes()
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == sorted(blobs)  # loaded, nothing new
    # der-infer's default, $DER_OV_CACHE_DIR, is honoured the same way
    third, err3 = cpp_records(cpp_ov, tiny_onnx, files[:20], tmp_path, name="third", DER_OV_CACHE_DIR=str(cache))
    assert summary_of(err3).split(" (")[0].endswith(", cached"), err3
    assert third == first


def test_cache_never_serves_a_replaced_model(cpp_ov, tiny_onnx, files, tmp_path):
    """A re-export of the same size and modification time at the same path (what OpenVINO's own cache check
    compares) is compiled afresh: its scores, not the cached model's."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tiny_onnx))
    bias = next(t for t in reversed(model.graph.initializer)
                if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 1)
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(3.0), bias.name))
    retrained = tmp_path / "retrained.onnx"
    onnx.save(model, str(retrained))
    assert retrained.stat().st_size == tiny_onnx.stat().st_size
    engine, cache = tmp_path / "der.onnx", tmp_path / "cache"
    engine.write_bytes(tiny_onnx.read_bytes())
    stamp = engine.stat()
    cpp_records(cpp_ov, engine, files[:5], tmp_path, "--cache-dir", cache, name="old")
    engine.write_bytes(retrained.read_bytes())
    os.utime(engine, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    new, err = cpp_records(cpp_ov, engine, files[:5], tmp_path, "--cache-dir", cache, name="new")
    assert ", cached" not in summary_of(err), err
    probs, card = python_openvino(retrained, files[:5])
    compare(new, files[:5], probs, card, TOL)


def test_mode_and_cache_dir_errors_are_one_line(cpp_ov, tiny_onnx, files, tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    cases = [
        (["--backend", "openvino", "--mode", "fast"],
         "error: invalid value for --mode: 'fast' is not one of 'latency', 'throughput'"),
        (["--mode", "throughput"], "error: --mode applies to --backend openvino only"),
        (["--cache-dir", tmp_path / "c"], "error: --cache-dir applies to --backend openvino only"),
        (["--backend", "openvino", "--cache-dir", a_file],
         f"error: {a_file}: cannot create the OpenVINO cache folder ("),
        (["--backend", "openvino", "--device", "1"], f"error: {tiny_onnx}: --device applies to GPUs"),
    ]
    for opts, want in cases:
        proc = run([cpp_ov, "--engine", tiny_onnx, *opts, files[0]])
        err = proc.stderr.decode()
        assert proc.returncode == 2 and proc.stdout == b"", (opts, err)
        assert err.splitlines() == [err.strip()] and err.startswith(want), (opts, err)
