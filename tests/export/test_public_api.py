"""der_deploy.export's public surface (issue 11 §4.1): lazy like der_deploy.runtime, the names the README uses."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import der_deploy.export as export

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {  # name -> the module that implements it (TensorRT's builder lives with its backend)
    "export_onnx": "der_deploy.export.onnx_export", "convert_fp16": "der_deploy.export.precision",
    "quantize_int8": "der_deploy.export.quantize", "build_engine": "der_deploy.backends.tensorrt.builder",
    "BatchProfile": "der_deploy.artifact.profile", "parse_profile": "der_deploy.artifact.profile",
}


def test_names_resolve_to_the_implementations():
    import importlib

    for name, module in PUBLIC.items():
        assert getattr(export, name) is getattr(importlib.import_module(module), name)
    assert set(PUBLIC) <= set(export.__all__) and set(PUBLIC) <= set(dir(export))
    try:
        export.nope
    except AttributeError as err:
        assert "der_deploy.export" in str(err) and "nope" in str(err)
    else:
        raise AssertionError("unknown names must raise AttributeError")


def test_import_is_lazy():
    code = ("import sys; import der_deploy.export as e; from der_deploy.export import BatchProfile; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_readme_uses_the_public_surface():
    readme = (ROOT / "README.md").read_text()
    used = set()
    for line in re.findall(r"^from der_deploy\.export import (.+)$", readme, flags=re.M):
        used |= {n.strip() for n in line.split(",")}
    assert {"export_onnx", "convert_fp16", "quantize_int8", "build_engine"} <= used, used
    assert "der_deploy.export.onnx_export import" not in readme
