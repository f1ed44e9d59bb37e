"""Fixtures for the Triton tests: a real tritonserver (scripts/triton_server.sh, run by `make test`), the
Python that runs the Python-backend models, and a repository exported from the trained tiny model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def triton_install():
    from der_deploy.runtime.triton_server import ServeError, find_server

    try:
        return find_server()
    except ServeError as err:
        pytest.skip(f"no tritonserver ({err}); `make test` fetches one with scripts/triton_server.sh")


@pytest.fixture(scope="session")
def stub_python(triton_install) -> Path:
    """The Python that runs the Python-backend models (numpy<2 for the stub bundled with pytriton)."""
    explicit = os.environ.get("DER_TRITON_PYTHON")
    candidates = [Path(explicit)] if explicit else []
    up = triton_install.binary.resolve().parents
    if len(up) > 4:  # scripts/triton_server.sh's layout: CACHE/pytriton-X/pytriton/tritonserver/bin/tritonserver
        candidates.append(up[4] / "stub-env" / "bin" / "python")
    for c in candidates:
        if c.exists():
            return c
    pytest.skip("no Python environment for the Triton Python backend; run scripts/triton_server.sh")


@pytest.fixture(scope="session")
def serve_images(synth_voc) -> list[Path]:
    return sorted((synth_voc / "JPEGImages").glob("*.jpg"))[:12]


@pytest.fixture(scope="session")
def python_repo(tiny_onnx, tmp_path_factory) -> Path:
    """--triton-backend python repository of the trained tiny model (what this CPU machine can serve)."""
    from der_deploy.export.triton import write_repository

    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(tiny_onnx, repo, backend="python", max_batch=16)
    return repo


def make_fake_plan(folder: Path, card, *, lo: int = 1, opt: int = 4, hi: int = 8, onnx: Path | None = None) -> Path:
    """A stand-in TensorRT plan (random bytes) with a valid sidecar: what the repository writer reads.

    With ``onnx`` (copied beside the plan and named in the sidecar, hash checked) the I/O come from that ONNX.
    """
    import hashlib
    import shutil

    from der_deploy.fileio import sha256_file
    from der_deploy.runtime.sidecar import Sidecar, write_sidecar

    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / "der.plan"
    data = os.urandom(256)
    plan.write_bytes(data)
    onnx_name, onnx_sha = "", "0" * 64
    if onnx is not None:
        shutil.copyfile(onnx, folder / "der.fp16.onnx")
        onnx_name, onnx_sha = "der.fp16.onnx", sha256_file(folder / "der.fp16.onnx")
    h, w = card.input_size
    write_sidecar(plan, Sidecar(
        card=card, onnx_sha256=onnx_sha, tensorrt_version="10.9.0", gpu_name="NVIDIA H200", compute_capability="9.0",
        precision="fp16", profiles=[{"input": "images", "min": [lo, 3, h, w], "opt": [opt, 3, h, w], "max": [hi, 3, h, w]}],
        build_seconds=1.0, built_at="2026-01-01T00:00:00+00:00", der_deploy_version="0.1.0",
        plan_sha256=hashlib.sha256(data).hexdigest(), onnx_name=onnx_name))
    return plan


@pytest.fixture(scope="session")
def fake_plan():
    return make_fake_plan
