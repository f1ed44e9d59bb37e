"""Fixtures for the Triton tests: a real tritonserver (`der-serve install`, run by `make test`), the
Python that runs the Python-backend models, and a repository exported from the trained tiny model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fakes.tensorrt import make_fake_plan


@pytest.fixture(scope="session")
def triton_install():
    from der_deploy.serve.server import ServeError, find_server

    try:
        return find_server()
    except ServeError as err:
        pytest.skip(f"no tritonserver ({err}); `make test` fetches one with `der-serve install`")


@pytest.fixture(scope="session")
def stub_python(triton_install) -> Path:
    """The Python that runs the Python-backend models (numpy<2 for the stub bundled with pytriton)."""
    explicit = os.environ.get("DER_TRITON_PYTHON")
    candidates = [Path(explicit)] if explicit else []
    up = triton_install.binary.resolve().parents
    if len(up) > 4:  # der-serve install's layout: CACHE/pytriton-X/pytriton/tritonserver/bin/tritonserver
        candidates.append(up[4] / "stub-env" / "bin" / "python")
    for c in candidates:
        if c.exists():
            return c
    pytest.skip("no Python environment for the Triton Python backend; run `der-serve install`")


@pytest.fixture(scope="session")
def serve_images(synth_voc) -> list[Path]:
    return sorted((synth_voc / "JPEGImages").glob("*.jpg"))[:12]


@pytest.fixture(scope="session")
def python_repo(tiny_onnx, tmp_path_factory) -> Path:
    """--triton-backend python repository of the trained tiny model (what this CPU machine can serve)."""
    from der_deploy.serve.repository import write_repository

    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(tiny_onnx, repo, backend="python", max_batch=16)
    return repo


@pytest.fixture(scope="session")
def start_server(triton_install, stub_python):
    """``start_server(repo)``: a real tritonserver on free loopback ports (use as ``with start_server(repo) as srv``)."""
    from der_deploy.serve.server import TritonServer, free_ports

    def start(repo: Path) -> TritonServer:
        http, grpc, metrics = free_ports(3)
        return TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, server=triton_install.binary,
                            python=stub_python)

    return start


@pytest.fixture(scope="session")
def server(python_repo, start_server):
    """One server of ``python_repo`` shared by every module (each start costs ~20-60 s on 2 cores)."""
    pytest.importorskip("tritonclient.http")
    with start_server(python_repo) as srv:
        srv.wait_ready(timeout=120)
        yield srv


@pytest.fixture(scope="session")
def fake_plan():
    """make_fake_plan(folder, card, lo=, opt=, hi=, onnx=): a plan the fake TensorRT loads, with a valid sidecar."""
    return make_fake_plan
