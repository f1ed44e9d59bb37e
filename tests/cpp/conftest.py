"""The C++ SDK's build for the tests under tests/cpp: built (or brought up to date) once per session.

`make test` builds it first (`make cpp`). Without a build, these tests skip locally with the reason, but in
CI (CI=true) a missing build is a failure: the session then builds it with scripts/cpp_build.sh itself.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("DER_CPP_BUILD", REPO / "build" / "cpp"))


@pytest.fixture(scope="session")
def cpp_build() -> Path:
    """build/cpp with der-infer-cpp and libder_runtime.so, up to date with runtime/cpp."""
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not (BUILD / "CMakeCache.txt").is_file():
        if not in_ci:
            pytest.skip(f"C++ SDK not built ({BUILD} missing); run `make cpp` (CI builds it and fails without it)")
        proc = subprocess.run(["bash", str(REPO / "scripts" / "cpp_build.sh")], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"make cpp failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    else:  # incremental: a no-op when nothing changed, so the tests never run a stale binary
        proc = subprocess.run(["cmake", "--build", str(BUILD), "-j", "2"], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"building {BUILD} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    for name in ("der-infer-cpp", "libder_runtime.so"):
        if not (BUILD / name).exists():
            pytest.fail(f"{BUILD / name} is missing after the build; see runtime/cpp/CMakeLists.txt")
    return BUILD


@pytest.fixture(scope="session")
def der_infer_cpp(cpp_build) -> Path:
    return cpp_build / "der-infer-cpp"
