"""Where der-serve's tritonserver and its numpy<2 Python live: one documented cache folder, never the checkout.

``der-serve install`` fills it: PyPI's nvidia-pytriton wheel (tritonserver, its libraries and the Python
backend) is downloaded and unzipped -- never pip-installed, since it pins numpy<2 -- and ``stub-env`` is a
virtual environment with numpy<2 and this der-deploy, because the bundled Python-backend stub was built for
numpy 1.x and silently corrupts numpy 2 tensors (measured: an input [1, 2] arrived as [1, 1]).

The folder is ``$DER_TRITON_CACHE``, else ``$XDG_CACHE_HOME/der-deploy/triton``, else
``~/.cache/der-deploy/triton``::

    <cache>/pytriton-<version>/pytriton/tritonserver/bin/tritonserver
    <cache>/stub-env/bin/python            (numpy<2 + der-deploy, for the Python-backend models)
    <cache>/wheels/                        (the downloaded wheel)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from der_deploy.errors import DerError

PYTRITON_VERSION = "0.7.0"  # its tritonserver and Python-backend stubs are what the tests ran against


class InstallError(DerError):
    """The server bundle or its Python environment could not be made."""


def cache_dir() -> Path:
    """The cache folder (see the module docstring); not created here."""
    explicit = os.environ.get("DER_TRITON_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "der-deploy" / "triton"


@dataclass(frozen=True)
class Installed:
    server: Path  # tritonserver binary
    python: Path  # stub-env's python


def server_path(cache: Path, version: str = PYTRITON_VERSION) -> Path:
    return cache / f"pytriton-{version}" / "pytriton" / "tritonserver" / "bin" / "tritonserver"


def stub_python(cache: Path) -> Path:
    return cache / "stub-env" / "bin" / "python"


def cached_servers(cache: Path | None = None) -> list[Path]:
    """tritonserver binaries already unpacked in the cache (any pytriton version), newest name last."""
    cache = cache_dir() if cache is None else cache
    return sorted(cache.glob("pytriton-*/pytriton/tritonserver/bin/tritonserver"))


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise InstallError(f"{what} failed: {tail[:300]}")


def _unpack_server(cache: Path, version: str, python: str) -> Path:
    binary = server_path(cache, version)
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _run([python, "-m", "pip", "download", "-q", "--no-deps", f"nvidia-pytriton=={version}", "-d", str(wheels)],
         f"downloading nvidia-pytriton {version} (pip download; check the network or the package index)")
    found = sorted(wheels.glob(f"nvidia_pytriton-{version}-*.whl"))
    if not found:
        raise InstallError(f"{wheels}: pip left no nvidia_pytriton-{version} wheel; check the package index")
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=cache))
    try:
        zipfile.ZipFile(found[0]).extractall(tmp)
        # zipfile keeps no exec bits: the server and every stub must be executable
        top = tmp / "pytriton" / "tritonserver"
        for exe in [top / "bin" / "tritonserver", *top.glob("python_backend_stubs/*/triton_python_backend_stub")]:
            exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        tmp.chmod(0o755)  # mkdtemp makes it private
        dest = cache / f"pytriton-{version}"
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)  # atomic publish: a half-extracted tree is never seen as ready
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


def der_deploy_source() -> str:
    """What pip should install into stub-env to get *this* der-deploy: the folder or wheel it was installed from
    (PEP 610 direct_url.json, written for editable and local installs alike), else the released version."""
    try:
        dist = metadata.distribution("der-deploy")
    except metadata.PackageNotFoundError:
        raise InstallError("der-deploy is not installed in this Python; pip install it first") from None
    info = json.loads(dist.read_text("direct_url.json") or "{}")
    url = info.get("url", "")
    if url.startswith("file://") and Path(url[len("file://"):]).exists():
        return url[len("file://"):]
    return f"der-deploy=={dist.version}"


def _editable() -> bool:
    info = json.loads(metadata.distribution("der-deploy").read_text("direct_url.json") or "{}")
    return bool(info.get("dir_info", {}).get("editable"))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _stub_env(cache: Path, python: str) -> Path:
    env = cache / "stub-env"
    source = der_deploy_source()
    project = Path(source) / "pyproject.toml"  # a source folder: its dependencies may change under one version
    deps = hashlib.sha256(project.read_bytes()).hexdigest()[:16] if project.is_file() else ""
    want = json.dumps({"python": list(sys.version_info[:2]), "source": source, "openvino": _has("openvino"),
                       "version": metadata.version("der-deploy"), "pyproject": deps})
    stamp = env / ".der-stamp"
    if stamp.is_file() and stamp.read_text() == want and stub_python(cache).is_file():
        return stub_python(cache)
    shutil.rmtree(env, ignore_errors=True)
    _run([python, "-m", "venv", str(env)], f"creating {env} (python -m venv)")
    editable = ["-e"] if Path(source).is_dir() and _editable() else []
    target = source
    if _has("openvino"):  # the Python engine model may run on OpenVINO (--engine-backend openvino): mirror this env
        target = f"{source}[openvino]" if "==" not in source else source.replace("==", "[openvino]==", 1)
    _run([str(stub_python(cache)), "-m", "pip", "install", "-q", "--disable-pip-version-check", "numpy<2",
          *editable, target], f"installing numpy<2 and der-deploy ({target}) into {env}")
    stamp.write_text(want)
    return stub_python(cache)


def install(cache: Path | None = None, *, version: str = PYTRITON_VERSION, python: str | None = None) -> Installed:
    """Make sure the cache holds tritonserver and stub-env; cheap when both are already there."""
    cache = cache_dir() if cache is None else Path(cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InstallError(f"{cache}: cannot create the cache folder ({err.strerror}); set DER_TRITON_CACHE "
                           "to a writable folder") from None
    python = python or sys.executable
    return Installed(_unpack_server(cache, version, python), _stub_env(cache, python))
