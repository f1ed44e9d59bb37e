"""der-bench runs every row and reports consistent numbers (speed is printed, never asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_bench_table_rows_and_json(trained_ckpt, synth_voc, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [str(BIN / "der-bench"), str(trained_ckpt), str(synth_voc), "--iters", "2", "--warmup", "0", "--batches", "1,2",
         "--calib-max", "8", "--formats", "torch,ort-fp32,ort-int8,trt", "--workdir", str(tmp_path / "w"), "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    report = json.loads(out.read_text())
    rows = {(r["format"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == {("PyTorch eager", "fp32"), ("ONNX Runtime", "fp32"), ("ONNX Runtime", "int8 (U8S8)"),
                         ("TensorRT", "fp16")}
    for key in [("PyTorch eager", "fp32"), ("ONNX Runtime", "fp32"), ("ONNX Runtime", "int8 (U8S8)")]:
        row = rows[key]
        assert row["note"] == ""
        assert set(row["speed"]) == {"1", "2"} and all(v["img_s"] > 0 for v in row["speed"].values())
        assert row["peak_rss_mb"] > 0 and row["map"] is not None
    assert rows[("PyTorch eager", "fp32")]["delta_map_pt"] == 0.0
    assert abs(rows[("ONNX Runtime", "fp32")]["delta_map_pt"]) <= 0.05
    assert rows[("ONNX Runtime", "int8 (U8S8)")]["size_bytes"] < rows[("ONNX Runtime", "fp32")]["size_bytes"] / 2
    # No TensorRT here: the row is present and says why instead of disappearing.
    trt = rows[("TensorRT", "fp16")]
    assert trt["speed"] == {} and "not available" in trt["note"]
    e2e = report["end_to_end"]
    assert e2e["images"] > 0 and e2e["end_to_end_img_s"] > 0 and e2e["engine_only_img_s"] > 0
    assert "img/s b1" in proc.stdout and "end to end" in proc.stdout


def test_bench_rejects_unknown_format(tmp_path):
    proc = subprocess.run([str(BIN / "der-bench"), str(tmp_path / "model.pt"), "--formats", "torch,onnx-fp64"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown format" in proc.stderr and "Traceback" not in proc.stderr
