"""der-serve as a user runs it (a subprocess): ready line, endpoints that answer, clean stop on SIGTERM and
Ctrl-C with no process left behind, and one-line errors for a busy port, a missing server, a numpy 2
Python for the bundled stub and a model Triton refuses."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from der_deploy.serve.server import free_ports

BIN = Path(sys.executable).parent  # the console scripts of this environment


def _group_members(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (tritonserver and its Python-backend stubs)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(d.name))
    return pids


def _serve(args, **kw):
    return subprocess.Popen([str(BIN / "der-serve"), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _read_until(proc, marker: str, timeout: float) -> list[str]:
    lines: list[str] = []
    done = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if marker in line:
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout)
    return lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_starts_answers_and_stops_cleanly(python_repo, triton_install, stub_python, sig):
    http, grpc, metrics = free_ports(3)
    proc = _serve([python_repo, "--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics,
                   "--server", triton_install.binary, "--python", stub_python, "--timeout", "120"])
    server_pid = None
    try:
        lines = _read_until(proc, "Ctrl-C to stop.", timeout=150)
        assert lines and lines[-1] == "Ctrl-C to stop.", (lines, proc.poll())
        assert lines[0].startswith("der-serve: 4 models of ") and "ready" in lines[0]
        assert f"http://127.0.0.1:{http}" in lines[1] and "/v2/models/der_e2e/infer" in lines[1]
        assert f"127.0.0.1:{grpc}" in lines[2] and f"http://127.0.0.1:{metrics}/metrics" in lines[3]
        server_pid = int(lines[0].rsplit("pid ", 1)[1].rstrip(")"))
        assert len(_group_members(server_pid)) >= 4  # tritonserver + one stub per Python model instance
        for path in (f"http://127.0.0.1:{http}/v2/health/ready", f"http://127.0.0.1:{http}/v2/models/der_e2e/ready"):
            with urllib.request.urlopen(path, timeout=10) as r:
                assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
            assert b"nv_inference_count" in r.read()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # Whatever happened, never leave a server behind for the rest of the session; the assertion below still
        # sees what der-serve itself left.
        leftover = _group_members(server_pid) if server_pid is not None else []
        for pid in leftover:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "der-serve: stopped (tritonserver exit code 0)" in err and "Traceback" not in err
    assert leftover == []  # no orphaned server or stub
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", http), timeout=2).close()


def _one_line_error(proc_args, timeout=120, **kw) -> str:
    proc = subprocess.run([str(BIN / "der-serve"), *map(str, proc_args)], capture_output=True, text=True,
                          timeout=timeout, **kw)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_busy_port_is_one_line(python_repo, triton_install, stub_python):
    http, grpc, metrics = free_ports(3)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", grpc))
        holder.listen()
        line = _one_line_error([python_repo, "--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics,
                                "--server", triton_install.binary, "--python", stub_python])
    assert line == (f"error: port {grpc} on 127.0.0.1 is already in use (--grpc-port); stop what holds it or choose "
                    "another port with --grpc-port")


def test_missing_server_is_one_line(python_repo, tmp_path, monkeypatch):
    line = _one_line_error([python_repo, "--server", tmp_path / "tritonserver"])
    assert line == f"error: {tmp_path / 'tritonserver'}: not an executable tritonserver; check --server / DER_TRITONSERVER"
    # Nothing anywhere: PATH without it, no pytriton package, an empty cache folder.
    import importlib.util

    import der_deploy.serve.server as ts

    monkeypatch.delenv("DER_TRITONSERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("DER_TRITON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ts.ServeError, match=r"^tritonserver not found: run `der-serve install` \(unpacks one into "
                                            + re.escape(str(tmp_path / "cache")) + r"\), put it on PATH"):
        ts.find_server()


def test_numpy2_python_for_the_bundled_stub_is_refused(python_repo, triton_install):
    import numpy

    if int(numpy.__version__.split(".")[0]) < 2:
        pytest.skip("this environment has numpy 1.x")
    http, grpc, metrics = free_ports(3)
    line = _one_line_error([python_repo, "--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics,
                            "--server", triton_install.binary, "--python", sys.executable])
    assert "was built for numpy 1.x and corrupts numpy 2 tensors" in line and "--python" in line


def test_model_that_fails_to_load_quotes_triton(tiny_onnx, tmp_path, triton_install, stub_python):
    from der_deploy.serve.repository import write_repository

    repo = write_repository(tiny_onnx, tmp_path / "native").root  # onnxruntime_onnx: not in this server
    http, grpc, metrics = free_ports(3)
    t0 = time.monotonic()
    line = _one_line_error([repo, "--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics,
                            "--server", triton_install.binary, "--python", stub_python])
    assert line == ("error: Triton failed to load model 'der': Invalid argument: unable to find backend library for "
                    "backend 'onnxruntime', try specifying runtime on the model configuration.")
    assert time.monotonic() - t0 < 100


def test_bundled_server_picks_the_stub_env_by_default(python_repo, triton_install, stub_python, monkeypatch):
    """Without --python, a numpy 2 interpreter gives way to der-serve install's numpy<2 environment."""
    import numpy

    from der_deploy.serve.server import TritonServer

    beside = triton_install.binary.resolve().parents[4] / "stub-env" / "bin" / "python"
    if int(numpy.__version__.split(".")[0]) < 2 or not beside.is_file():
        pytest.skip("needs numpy 2 here and the stub env of der-serve install")
    monkeypatch.delenv("DER_TRITON_PYTHON", raising=False)
    srv = TritonServer(python_repo, server=triton_install.binary)
    try:
        backends = srv._backend_dir()
        assert srv.python == beside
        stub = backends / "python" / "triton_python_backend_stub"
        assert stub.is_symlink() and stub.resolve().parent.name == "%d.%d" % sys.version_info[:2]
    finally:
        srv.cleanup()


def test_python_model_that_fails_to_initialize_is_one_line(python_repo, tmp_path, triton_install, stub_python):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(python_repo, repo)
    (repo / "der_postprocess" / "1" / "model.py").write_text("raise RuntimeError('thresholds are gone')\n")
    http, grpc, metrics = free_ports(3)
    line = _one_line_error([repo, "--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics,
                            "--server", triton_install.binary, "--python", stub_python])
    # Triton's reason, without the Python traceback it appends (escaped as a literal "\n")
    assert line == "error: Triton failed to load model 'der_postprocess': Internal: RuntimeError: thresholds are gone"
