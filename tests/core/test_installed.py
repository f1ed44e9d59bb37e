"""A non-editable install works outside the checkout: the wheel carries every package of the layout, and the CLIs
(der-infer, der-serve) run from a folder that is not the source tree, finding tritonserver through the
documented cache folder rather than through the checkout.

The wheel is built offline from this tree and installed without dependencies into a fresh venv; the dependencies
(numpy, onnxruntime, ...) are taken from the test environment through a path entry, since nothing may be
downloaded here. A path entry does not run the editable install's import hook, so der_deploy can only come from
the wheel -- the test checks that it does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("installed")
    wheels = tmp / "wheels"
    res = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, ROOT],
               cwd=tmp)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(wheels.glob("der_deploy-*.whl"))
    venv = tmp / "venv"
    assert _run([sys.executable, "-m", "venv", venv]).returncode == 0
    res = _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])
    assert res.returncode == 0, res.stderr[-2000:]
    site = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after the venv's own packages
    return venv


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(DER_NO_PROGRESS="1", **extra)
    return env


def test_wheel_has_every_package_and_imports_from_the_venv(installed, tmp_path):
    code = ("import importlib, pkgutil, json, der_deploy; "
            "mods = [m.name for m in pkgutil.walk_packages(der_deploy.__path__, 'der_deploy.')]; "
            "print(json.dumps({'file': der_deploy.__file__, 'mods': mods}))")
    res = _run([installed / "bin" / "python", "-c", code], cwd=tmp_path, env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert Path(out["file"]).is_relative_to(installed), out["file"]  # the wheel, not the checkout
    for name in ("der_deploy.artifact.card", "der_deploy.backends.registry", "der_deploy.backends.onnxruntime.runner",
                 "der_deploy.backends.tensorrt.builder", "der_deploy.backends.openvino.runner",
                 "der_deploy.serve.install", "der_deploy.serve.models", "der_deploy.tools.evaluate",
                 "der_deploy.export.chain", "der_deploy.runtime.predictor", "der_deploy.cli.serve"):
        assert name in out["mods"], name


def test_der_infer_outside_the_checkout_matches_the_dev_install(installed, tiny_onnx, synth_voc, tmp_path):
    images = synth_voc / "JPEGImages"
    dev = _run([Path(sys.executable).with_name("der-infer"), "--engine", tiny_onnx, images, "--format", "jsonl"],
               cwd=tmp_path, env=_env())
    assert dev.returncode == 0, dev.stderr[-2000:]
    res = _run([installed / "bin" / "der-infer", "--engine", tiny_onnx, images, "--format", "jsonl"], cwd=tmp_path,
               env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout == dev.stdout and res.stdout.count("\n") == len(list(images.glob("*.jpg")))


def test_der_serve_finds_its_server_in_the_cache_folder(installed, tmp_path):
    from der_deploy.serve.install import cache_dir, cached_servers

    res = _run([installed / "bin" / "der-serve", "--help"], cwd=tmp_path, env=_env())
    assert res.returncode == 0 and "install" in res.stdout and "load" in res.stdout
    if not cached_servers():
        pytest.skip(f"no tritonserver in {cache_dir()} (make test runs `der-serve install`)")
    code = ("from der_deploy.serve.server import find_server; from der_deploy.serve.install import der_deploy_source; "
            "print(find_server().binary); print(der_deploy_source())")
    res = _run([installed / "bin" / "python", "-c", code], cwd=tmp_path,
               env=_env(DER_TRITON_CACHE=str(cache_dir()), PATH="/usr/bin:/bin"))
    assert res.returncode == 0, res.stderr[-2000:]
    server, source = res.stdout.splitlines()
    assert Path(server) in cached_servers()
    assert source.endswith(".whl") and not Path(source).is_relative_to(ROOT)  # stub-env gets the installed wheel
    # An empty cache folder and nothing on PATH: one line saying where it looked and how to get a server.
    code = ("from der_deploy.serve.server import ServeError, find_server\n"
            "try:\n    find_server()\nexcept ServeError as err:\n    print(err)")
    res = _run([installed / "bin" / "python", "-c", code], cwd=tmp_path,
               env=_env(DER_TRITON_CACHE=str(tmp_path / "empty"), PATH="/usr/bin:/bin"))
    assert res.stdout.strip() == (f"tritonserver not found: run `der-serve install` (unpacks one into "
                                  f"{tmp_path / 'empty'}), put it on PATH, or pass --server PATH")
