"""der-infer-cpp's command line: exit codes and one-line errors as der-infer's, atomic -o, Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PY_INFER = Path(sys.executable).with_name("der-infer")


def run(exe, *args, cwd=None):
    env = dict(os.environ, DER_NO_PROGRESS="1")
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def images(synth_voc):
    return sorted((synth_voc / "JPEGImages").glob("*.jpg"))


def test_help_lists_every_option(der_infer_cpp):
    rc, out, _ = run(der_infer_cpp, "--help")
    assert rc == 0
    for opt in ("--engine", "--batch-size", "--threshold", "--top-k", "--format", "--output", "--strict",
                "--backend", "--precision", "--mode", "--cache-dir", "--providers", "--device", "--threads",
                "--workers", "--max-pixels", "--help"):
        assert opt in out, opt


@pytest.mark.parametrize("args", [
    [],
    ["--engine"],
    ["--engine", "{engine}"],
    ["--engine", "{engine}", "{img}", "--threshold", "0.5", "--top-k", "2"],
    ["--engine", "{engine}", "{img}", "--threshold", "1.5"],
    ["--engine", "{engine}", "{img}", "--batch-size", "0"],
    ["--engine", "{engine}", "{img}", "--format", "xml"],
    ["--engine", "{engine}", "{img}", "-o", "{tmp}/out.txt"],
    ["--engine", "{engine}", "{img}", "--top-k", "99"],
    ["--engine", "{engine}", "{img}", "--bogus"],
], ids=["nothing", "engine-no-value", "no-paths", "threshold+top-k", "threshold-range", "batch-0", "format",
        "unknown-suffix", "top-k-too-big", "unknown-option"])
def test_usage_errors_exit_2_like_python(der_infer_cpp, tiny_onnx, images, tmp_path, args):
    args = [a.format(engine=tiny_onnx, img=images[0], tmp=tmp_path) for a in args]
    rc, out, err = run(der_infer_cpp, *args)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert out == ""
    assert run(PY_INFER, *args)[0] == 2
    assert not list(tmp_path.iterdir())


def test_engine_and_input_errors_read_like_python(der_infer_cpp, tiny_onnx, images, tmp_path):
    import onnx

    model = onnx.load(str(tiny_onnx), load_external_data=False)
    del model.metadata_props[:]
    nocard = tmp_path / "nocard.onnx"
    onnx.save(model, str(nocard))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny_onnx.read_bytes()[:100_000])
    (tmp_path / "empty").mkdir()
    (tmp_path / "weights.pt").write_bytes(b"x")
    cases = [
        ["--engine", tmp_path / "missing.onnx", images[0]],
        ["--engine", tmp_path / "weights.pt", images[0]],
        ["--engine", nocard, images[0]],
        ["--engine", truncated, images[0]],
        ["--engine", truncated, "--backend", "openvino", images[0]],
        ["--engine", tiny_onnx, tmp_path / "no-such.jpg"],
        ["--engine", tiny_onnx, tmp_path / "empty"],
        ["--engine", tiny_onnx, "--backend", "trt", images[0]],
    ]
    for args in cases:
        py, cpp = run(PY_INFER, *args), run(der_infer_cpp, *args)
        assert py[0] == cpp[0] == 2, (args, py, cpp)
        assert cpp[2] == py[2], args  # the same one line, word for word


def test_device_is_a_gpu_index(der_infer_cpp, tiny_onnx, images):
    # No GPU needed: every refusal comes before a device is opened, in one line.
    cases = [
        (["--device", "-1"], "error: invalid value for --device: -1 is not in the range x>=0"),
        (["--device", "one"], "error: invalid value for --device: 'one' is not a valid integer"),
        (["--device", "1"], f"error: {tiny_onnx}: --device 1 needs a GPU provider; add --providers cuda,cpu"),
    ]
    for opts, want in cases:
        rc, out, err = run(der_infer_cpp, "--engine", tiny_onnx, *opts, images[0])
        assert rc == 2 and out == "", err
        assert err.splitlines() == [err.strip()] and err.startswith(want), (opts, err)


def test_strict_and_output_file(der_infer_cpp, tiny_onnx, images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 nope")
    target = tmp_path / "new" / "deeper" / "out.csv"
    rc, out, err = run(der_infer_cpp, "--engine", tiny_onnx, images[0], bad, "-o", target)
    assert rc == 0 and out == ""
    assert f"skipped {bad}: " in err and "1 of 2 images could not be read and were skipped" in err
    assert target.read_text().splitlines()[0].startswith("path,labels,")
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.csv"]  # no temp file left
    rc, _, err = run(der_infer_cpp, "--engine", tiny_onnx, images[0], bad, "--strict", "-o", target)
    assert rc == 1 and "(--strict: exit 1)" in err
    rc, _, err = run(der_infer_cpp, "--engine", tiny_onnx, images[0], "--format", "jsonl", "-o", tmp_path)
    assert rc == 2 and err.startswith(f"error: {tmp_path}: is a folder")


def test_ctrl_c_exits_130_and_leaves_no_output(der_infer_cpp, tiny_onnx, images, tmp_path):
    bad = tmp_path / "first.jpg"
    bad.write_bytes(b"not an image")  # its "skipped" line tells us the run has started
    target = tmp_path / "out.jsonl"
    env = dict(os.environ, DER_NO_PROGRESS="1")
    # Batch 1, decoding inline, the images repeated: seconds of work to interrupt.
    many = [str(bad)] + [str(p) for p in images] * 1
    proc = subprocess.Popen([str(der_infer_cpp), "--engine", str(tiny_onnx), "--batch-size", "1", "--workers", "0",
                             "-o", str(target), *many], stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stderr.readline()
    assert first.startswith("skipped "), first
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, rest
    assert "interrupted" in rest
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_plan_errors_read_like_python_without_tensorrt(der_infer_cpp, tiny_onnx, images, tmp_path):
    # A .plan without its sidecar, with a broken sidecar, and with --providers: the same one line as der-infer
    # (both refuse before any TensorRT is needed).
    plan = tmp_path / "der.plan"
    plan.write_bytes(b"not really a plan")
    cases = [["--engine", plan, images[0]]]
    sidecar = tmp_path / "der.plan.json"
    py = run(PY_INFER, *cases[0])
    cpp = run(der_infer_cpp, *cases[0])
    assert py[0] == cpp[0] == 2 and cpp[2] == py[2], (py, cpp)
    sidecar.write_text('{"format": "der-deploy.tensorrt-plan", "format_version": 7}')
    py, cpp = run(PY_INFER, "--engine", plan, images[0]), run(der_infer_cpp, "--engine", plan, images[0])
    assert py[0] == cpp[0] == 2 and cpp[2] == py[2], (py, cpp)
    py = run(PY_INFER, "--engine", plan, "--providers", "cpu", images[0])
    cpp = run(der_infer_cpp, "--engine", plan, "--providers", "cpu", images[0])
    assert py[0] == cpp[0] == 2 and cpp[2] == py[2], (py, cpp)
