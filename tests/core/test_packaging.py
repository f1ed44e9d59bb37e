"""pyproject metadata (issue 11 §4.3): the license is an SPDX expression (PEP 639), so building der-deploy
prints no setuptools deprecation warning and the metadata carries License-Expression."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_expression_and_builds_without_warnings(tmp_path):
    tomllib = pytest.importorskip("tomllib")
    setuptools = pytest.importorskip("setuptools")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    assert "license-files" not in meta["project"] or meta["project"]["license-files"]
    requires = meta["build-system"]["requires"]
    assert any(r.replace(" ", "").startswith("setuptools>=") and int(r.split(">=")[1].split(".")[0]) >= 77
               for r in requires), requires  # PEP 639 license strings need setuptools 77+
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} here predates PEP 639 support")
    # Prepare the wheel metadata of a skeleton copy (the real pyproject, empty packages): fast and offline.
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "README.md", tmp_path)
    dirs = meta["tool"]["setuptools"]["package-dir"]
    for pkg in meta["tool"]["setuptools"]["packages"]:  # every package's folder, as the real build maps it
        top = next(k for k in sorted(dirs, key=len, reverse=True) if pkg == k or pkg.startswith(k + "."))
        folder = Path(dirs[top], *pkg[len(top):].split(".")[1:])
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "meta").mkdir()
    code = ("import sys, setuptools.build_meta as b; "
            "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    out = subprocess.run([sys.executable, "-W", "always", "-c", code, str(tmp_path / "meta")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SetuptoolsDeprecationWarning" not in out.stderr, out.stderr[-3000:]
    metadata = (tmp_path / "meta" / out.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
