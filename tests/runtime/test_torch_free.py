"""The runtime never imports torch: checked in fresh interpreters, and with torch made unimportable."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Every module of the torch-free layers, found by walking the packages (a new module is covered without editing
# this list): the core and the contract, every backend, the runtime, serving and the inference CLIs.
TORCH_FREE_PACKAGES = ["der_deploy", "der_deploy.backends", "der_deploy.runtime", "der_deploy.serve"]
TORCH_USING = {"der_deploy.train", "der_deploy.export", "der_deploy.tools",  # the stages that need torch
               "der_deploy.cli.train", "der_deploy.cli.export", "der_deploy.cli.eval", "der_deploy.cli.bench"}


def torch_free_modules() -> list[str]:
    import importlib
    import pkgutil

    names = []
    for pkg_name in TORCH_FREE_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
            if not any(info.name == t or info.name.startswith(t + ".") for t in TORCH_USING):
                names.append(info.name)
    return sorted(set(names))


def test_module_walk_covers_the_runtime():
    mods = torch_free_modules()
    for expected in ("der_deploy.runtime.predictor", "der_deploy.backends.onnxruntime.runner",
                     "der_deploy.backends.tensorrt.runner", "der_deploy.artifact.sidecar", "der_deploy.serve.client",
                     "der_deploy.cli.infer", "der_deploy.backends.openvino.runner", "der_deploy.backends.openvino.cpu"):
        assert expected in mods
    assert not any(m.startswith("der_deploy.train") for m in mods)


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
        for name in {torch_free_modules()!r}:
            importlib.import_module(name)
        import der_deploy.runtime as rt
        rt.Predictor, rt.OnnxRuntimeRunner, rt.read_card, rt.CamWriter  # resolve the lazy names too
        # openvino too: its runner imports it on activate() only, so importing a backend never pays for it
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "tensorrt", "openvino")))
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
