"""der-eval and der-bench on OpenVINO, on the trained tiny model: parity against the PyTorch checkpoint with the
budget of the precision that actually ran (read back from the compiled model), what ran in the report, and the
OpenVINO rows beside ONNX Runtime's in der-bench. BF16 on a CPU without native BF16 is checked as a refusal."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")

from der_deploy.tools.evaluate import DEFAULT_BUDGETS, evaluate  # noqa: E402
from der_deploy.backends.openvino.core import shared_core  # one Core per process (see there)

BIN = Path(sys.executable).parent


def _native_bf16() -> bool:
    return "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_eval_on_openvino_fp32_matches_onnx_runtime(tiny_onnx, synth_voc, trained_ckpt):
    ov = evaluate(tiny_onnx, synth_voc, reference=trained_ckpt, backend="openvino")
    ort = evaluate(tiny_onnx, synth_voc, backend="ort")
    assert ov.runtime.startswith("OpenVINO ") and " fp32" in ov.runtime
    assert ort.runtime.startswith("ONNX Runtime ") and "CPU" in ort.runtime
    assert ov.precision == "fp32" and ov.parity.budget_pt == DEFAULT_BUDGETS["fp32"]
    assert ov.parity.passed, ov.parity
    assert abs(ov.map - ort.map) * 100 < 0.05
    assert ov.to_dict()["runtime"] == ov.runtime


def test_eval_bf16_uses_the_bf16_budget_or_is_refused(tiny_onnx, synth_voc, trained_ckpt, tmp_path):
    out = tmp_path / "eval.json"
    proc = subprocess.run([str(BIN / "der-eval"), "--engine", str(tiny_onnx), str(synth_voc), "--reference",
                           str(trained_ckpt), "--backend", "openvino", "--precision", "bf16", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr
    if _native_bf16():
        assert proc.returncode == 0, proc.stderr
        report = json.loads(out.read_text())
        assert report["precision"] == "bf16" and report["parity"]["budget_pt"] == DEFAULT_BUDGETS["bf16"]
        assert " bf16" in report["runtime"]
    else:
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "bf16" in lines[0].lower() and lines[0].startswith("error: ")
        assert not out.exists()


def test_eval_precision_needs_openvino(tiny_onnx, synth_voc):
    proc = subprocess.run([str(BIN / "der-eval"), "--engine", str(tiny_onnx), str(synth_voc), "--precision", "bf16"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "add --backend openvino" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bench_openvino_rows_beside_onnx_runtime(trained_ckpt, synth_voc, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [str(BIN / "der-bench"), str(trained_ckpt), str(synth_voc), "--iters", "2", "--warmup", "0", "--batches", "1,2",
         "--calib-max", "8", "--formats", "ort-fp32,ort-int8,ov-fp32,ov-bf16,ov-int8", "--workdir", str(tmp_path / "w"),
         "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = {(r["format"], r["precision"]): r for r in report["rows"]}
    for key in [("OpenVINO", "fp32"), ("OpenVINO", "int8 (U8S8)")]:
        row = rows[key]
        assert row["note"] == "" and row["runtime"].startswith("OpenVINO ")
        assert set(row["speed"]) == {"1", "2"} and row["peak_rss_mb"] > 0
        assert row["map"] is not None and row["worst_class"]
    assert abs(rows[("OpenVINO", "fp32")]["delta_map_pt"] - rows[("ONNX Runtime", "fp32")]["delta_map_pt"]) < 0.05
    assert "int8" in rows[("OpenVINO", "int8 (U8S8)")]["runtime"]  # its INT8 layers really ran as INT8
    bf16 = rows[("OpenVINO", "bf16")]
    if _native_bf16():
        assert bf16["speed"] and "bf16" in bf16["runtime"]
    else:
        assert bf16["speed"] == {} and "bf16" in bf16["note"].lower()
        # the refusal is printed whole, under the table, and the table row points to it
        assert f"OpenVINO bf16: {bf16['note']}" in proc.stdout and "… [1]" in proc.stdout
    e2e = report["end_to_end_openvino"]
    assert e2e["images"] > 0 and e2e["end_to_end_img_s"] > 0 and e2e["engine_only_img_s"] > 0
    assert "OpenVINO vs ORT FP32" in proc.stdout and "end to end on OpenVINO" in proc.stdout
