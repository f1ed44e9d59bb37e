"""The installed SDK is find_package-able, and the README's C++ example builds against it and runs."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CONSUMER = """cmake_minimum_required(VERSION 3.25)
project(consumer CXX)
set(CMAKE_CXX_STANDARD 17)
find_package(der_runtime 0.1 REQUIRED)
add_executable(svc main.cpp)
target_link_libraries(svc PRIVATE der_runtime::der_runtime)
"""


def sh(*cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def test_readme_example_builds_against_the_installed_package(cpp_build, tiny_onnx, synth_voc, tmp_path):
    blocks = re.findall(r"```cpp\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    example = blocks[0]
    assert len(example.strip().splitlines()) <= 20  # the limit for a paste-able example
    prefix = tmp_path / "prefix"
    sh("cmake", "--install", cpp_build, "--prefix", prefix)
    assert (prefix / "include" / "der" / "der.h").is_file()
    # The installed copies find each other (and nothing in the working directory): RUNPATH of real folders.
    from test_exports import assert_real_runpath

    assert assert_real_runpath(prefix / "lib" / "libder_runtime.so")[0] == "$ORIGIN"
    assert assert_real_runpath(prefix / "bin" / "der-infer-cpp") == ["$ORIGIN/../lib"]
    assert subprocess.run([prefix / "bin" / "der-infer-cpp", "--help"], capture_output=True).returncode == 0
    src = tmp_path / "consumer"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(CONSUMER)
    (src / "main.cpp").write_text(example)
    sh("cmake", "-S", src, "-B", src / "build", f"-DCMAKE_PREFIX_PATH={prefix}")
    sh("cmake", "--build", src / "build")
    image = sorted((synth_voc / "JPEGImages").glob("*.jpg"))[0]
    missing = tmp_path / "missing.jpg"
    proc = subprocess.run([src / "build" / "svc", tiny_onnx, image, missing], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{image}:")
    assert f"skipped {missing}: file not found" in proc.stderr
    proc = subprocess.run([src / "build" / "svc", tmp_path / "none.onnx"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "no such file" in proc.stderr
