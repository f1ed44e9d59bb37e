"""The runtime never imports torch: checked in fresh interpreters, and with torch made unimportable."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

MODULES = ["der_deploy.runtime", "der_deploy.runtime.base", "der_deploy.runtime.onnxrt",
           "der_deploy.runtime.artifacts", "der_deploy.runtime.predictor", "der_deploy.runtime.pipeline",
           "der_deploy.runtime.cam", "der_deploy.cli.infer"]
OPTIONAL = ["der_deploy.runtime.tensorrt", "der_deploy.runtime.sidecar"]  # other issues' modules, when present

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"blocked import of {name}")
            return None
    sys.meta_path.insert(0, NoTorch())
""")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"DER_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})


def test_importing_runtime_does_not_import_torch():
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {MODULES!r}:
            importlib.import_module(name)
        for name in {OPTIONAL!r}:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
        import der_deploy.runtime as rt
        rt.Predictor, rt.OnnxRuntimeRunner, rt.read_card, rt.CamWriter  # resolve the lazy names too
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "tensorrt")))
    """)
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_predicts_with_torch_unimportable(tiny_model, image_folder):
    root, files, bad = image_folder
    code = BLOCKER + textwrap.dedent(f"""
        import json
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("blocker failed")
        from click.testing import CliRunner
        from der_deploy.runtime import Predictor
        from der_deploy.cli.infer import main
        with Predictor({str(tiny_model.path)!r}, workers=2) as pred:
            preds = pred.predict({[str(f) for f in files]!r}, with_cadm=True)
        res = CliRunner().invoke(main, ["--engine", {str(tiny_model.path)!r}, {str(root)!r}, "--format", "jsonl"])
        print(json.dumps({{"n": len(preds), "errors": sum(p.error is not None for p in preds),
                           "exit": res.exit_code, "lines": len(res.stdout.splitlines())}}))
    """)
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"n": len(files), "errors": len(bad), "exit": 0, "lines": len(files)}
