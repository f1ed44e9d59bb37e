"""Tables written to a pipe or log keep their full width (issue 11 §4.2): rich's 80-column default for
non-terminals cut der-export's verification table ("check (atol/…")."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

VERIFY_STYLE = """
import numpy as np
from der_deploy.compare import compare_outputs
from der_deploy.progress import err_console
rng = np.random.default_rng(0)
ref = {"logits": rng.standard_normal((4, 20)), "scores": rng.random((4, 20)), "cadm": rng.standard_normal((4, 20, 7, 7))}
out = {k: v + 1e-6 for k, v in ref.items()}
r = compare_outputs(ref, out, atol=1e-4, rtol=1e-3, title="ONNX Runtime FP32 vs PyTorch (a long descriptive title)")
err_console.print(r.table())
"""


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["DER_NO_PROGRESS"] = "1"
    return env


def test_verification_table_on_stderr_pipe_is_not_cut():
    from der_deploy.compare import CompareResult

    out = subprocess.run([sys.executable, "-c", VERIFY_STYLE], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert "…" not in out.stderr, out.stderr
    header = next(line for line in lines if "output" in line or CompareResult.COLUMNS[0] in line)
    for col in CompareResult.COLUMNS:  # every header cell whole, on the one header line
        assert col in header, (col, header)
    assert any("ONNX Runtime FP32 vs PyTorch (a long descriptive title)" in line for line in lines)
    assert max(len(line) for line in lines) > 80  # it really is wider than the old cut


def test_doctor_table_on_stdout_pipe_keeps_each_row_on_one_line():
    out = subprocess.run([str(BIN / "der-doctor")], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("│ python ")]
    assert len(rows) == 1 and "CPython" in rows[0]
    # the TensorRT hint (long) appears whole on one line whenever tensorrt is missing
    if "der-deploy[trt]" in out.stdout:
        assert any("pip install der-deploy[trt] on a machine with an NVIDIA GPU (CUDA 13 builds; on a CUDA 12 "
                   "driver: pip install der-deploy[trt-cu12])" in line for line in out.stdout.splitlines()), out.stdout
