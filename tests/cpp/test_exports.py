"""libder_runtime.so exports its public API and nothing else (README "C++ SDK"; include/der/export.h).

Public = the C functions declared in der.h plus what include/der/*.hpp marks DER_API (classes: their members,
typeinfo and vtable; functions). Everything else -- der::detail, der::trt, the runners, the thread pool,
members marked DER_LOCAL, ONNX Runtime, nlohmann::json and libstdc++ instantiations -- must stay hidden, and
every declared public name must really be exported (a missing DER_API breaks callers at link time).
The library and der-infer-cpp carry a RUNPATH of real folders only: an empty entry (CMake's padding for its
install-time rewrite) makes the loader search the working directory.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

INCLUDE = Path(__file__).resolve().parents[2] / "runtime" / "cpp" / "include" / "der"
TYPE_PREFIXES = ("typeinfo for ", "typeinfo name for ", "vtable for ")


def exported_symbols(so: Path) -> list[str]:
    """Demangled names of the dynamic symbols `so` defines (nm -D --defined-only -C)."""
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run(["nm", "-D", "--defined-only", "-C", str(so)], capture_output=True, text=True, check=True)
    names = []
    for line in out.stdout.splitlines():
        parts = line.split(maxsplit=2)  # address, type, name
        if len(parts) == 3:
            names.append(parts[2])
    return names


def public_api() -> tuple[set[str], set[str], set[str], set[str]]:
    """(C functions of der.h, DER_API classes, DER_API free functions, DER_LOCAL members) from the headers."""
    c_funcs = set(re.findall(r"DER_API\s[^;(]*?\b(der_\w+)\s*\(", (INCLUDE / "der.h").read_text()))
    classes, funcs, local = set(), set(), set()
    for header in INCLUDE.glob("*.hpp"):
        text = re.sub(r"//[^\n]*", "", header.read_text())
        classes |= set(re.findall(r"\b(?:class|struct)\s+DER_API\s+(\w+)", text))
        funcs |= set(re.findall(r"^\s*DER_API\s[^;{(]*?\b(\w+)\s*\(", text, re.M))
        local |= set(re.findall(r"^\s*DER_LOCAL\s[^;{(]*?\b(\w+)\s*\(", text, re.M))
    return c_funcs, classes, funcs, local


def qualified(symbol: str) -> list[str]:
    """"der::Card::to_json[abi:cxx11]() const" -> ["der", "Card", "to_json"]; typeinfo/vtable -> the class."""
    for prefix in TYPE_PREFIXES:
        if symbol.startswith(prefix):
            symbol = symbol[len(prefix):]
    name = re.sub(r"\[abi:\w+\]", "", symbol.split("(", 1)[0])
    return name.split("::")


def leaks(symbols: list[str]) -> list[str]:
    """The exported symbols that are not public API (empty when the export set is right)."""
    c_funcs, classes, funcs, local = public_api()
    bad = []
    for s in symbols:
        if "::" not in s and " " not in s:  # a C symbol
            if s not in c_funcs:
                bad.append(s)
            continue
        parts = qualified(s)
        is_type = s.startswith(TYPE_PREFIXES)
        if parts[0] != "der" or len(parts) not in (2, 3):
            bad.append(s)
        elif is_type:
            if len(parts) != 2 or parts[1] not in classes:
                bad.append(s)
        elif len(parts) == 2:
            if parts[1] not in funcs:
                bad.append(s)
        elif parts[1] not in classes or parts[2] in local:
            bad.append(s)
    return bad


def test_the_headers_declare_a_public_api():
    # Guards the parsing below: an empty API would make every check vacuous.
    c_funcs, classes, funcs, local = public_api()
    assert {"der_create", "der_predict_files", "der_predict_files_typed", "der_release_predictions"} <= c_funcs
    assert {"Error", "ImageError", "Card", "Predictor", "Runner", "Sidecar", "FoundImages"} <= classes
    assert {"decode_file", "resize", "path_text", "read_sidecar", "record_json", "version"} <= funcs
    assert {"decode_batch", "make_prediction"} <= local


def test_only_the_public_api_is_exported(cpp_build):
    symbols = exported_symbols(cpp_build / "libder_runtime.so")
    bad = leaks(symbols)
    assert not bad, f"{len(bad)} of {len(symbols)} exported symbols are not public API, e.g.:\n" + "\n".join(
        sorted(bad)[:25])
    # The usual suspects by name, anywhere in a symbol (no public signature mentions them).
    for marker in ("der::detail::", "der::trt::", "ThreadPool", "Predictor::Pool", "Predictor::Decoded", "Ort::",
                   "nlohmann::"):
        assert not [s for s in symbols if marker in s], marker


def test_every_public_name_is_exported(cpp_build):
    symbols = exported_symbols(cpp_build / "libder_runtime.so")
    c_funcs, classes, funcs, _ = public_api()
    heads = [qualified(s) for s in symbols if "::" in s]
    assert c_funcs - set(symbols) == set(), "der.h functions not exported"
    assert funcs - {p[1] for p in heads if len(p) == 2} == set(), "DER_API functions not exported"
    assert classes - {p[1] for p in heads} == set(), "DER_API classes without any exported symbol"
    # Exceptions cross the .so boundary: a caller's catch (der::ImageError&) needs the library's typeinfo.
    for cls in ("Error", "CardError", "ImageError", "EngineError", "BackendUnavailable"):
        assert f"typeinfo for der::{cls}" in symbols, cls


def test_the_check_can_fail():
    # The rule refuses what a default-visibility build exported (measured before export.h existed).
    assert leaks([
        "der::detail::set_resize_simd(bool)",
        "der::trt::input_shape(std::vector<long> const&)",
        "der::Predictor::decode_batch(std::vector<std::string> const&) const",
        "der::Predictor::Pool::~Pool()",
        "der::ThreadPool::ThreadPool(int)",
        "typeinfo for der::Predictor::Decoded",
        "typeinfo for Ort::Exception",
        "nlohmann::json_abi_v3_11_2::detail::parser<>::parse(bool)",
        "void std::vector<std::string>::_M_realloc_insert<std::string const&>()",
        "der_not_declared",
    ]) == [
        "der::detail::set_resize_simd(bool)",
        "der::trt::input_shape(std::vector<long> const&)",
        "der::Predictor::decode_batch(std::vector<std::string> const&) const",
        "der::Predictor::Pool::~Pool()",
        "der::ThreadPool::ThreadPool(int)",
        "typeinfo for der::Predictor::Decoded",
        "typeinfo for Ort::Exception",
        "nlohmann::json_abi_v3_11_2::detail::parser<>::parse(bool)",
        "void std::vector<std::string>::_M_realloc_insert<std::string const&>()",
        "der_not_declared",
    ]
    assert leaks(["der_create", "der::Predictor::predict(der::Image const&, der::Rule const&) const",
                  "typeinfo for der::ImageError", "der::path_text(std::string const&)"]) == []


def runpath(binary: Path) -> list[str]:
    """DT_RUNPATH (or DT_RPATH) entries of an ELF file, as written ($ORIGIN unexpanded); [] when it has none."""
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed")
    out = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, check=True).stdout
    found = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*)\]", out)
    assert len(found) <= 1, out
    return found[0].split(":") if found else []


def assert_real_runpath(binary: Path) -> list[str]:
    entries = runpath(binary)
    assert entries, f"{binary} has no RUNPATH"
    assert "" not in entries, f"{binary}: empty RUNPATH entries (the working directory): {':'.join(entries)}"
    for entry in entries:
        folder = Path(entry.replace("$ORIGIN", str(binary.resolve().parent)))
        assert folder.is_dir(), f"{binary}: RUNPATH entry {entry} is not a folder"
    return entries


def test_runpath_lists_only_real_folders(cpp_build):
    lib = assert_real_runpath(cpp_build / "libder_runtime.so")
    assert lib[0] == "$ORIGIN"  # then ONNX Runtime's and OpenVINO's folders
    assert assert_real_runpath(cpp_build / "der-infer-cpp") == ["$ORIGIN"]  # libder_runtime.so beside it


def test_the_runpath_check_can_fail(tmp_path):
    # What the build used to write: real entries, then CMake's ':' padding.
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a padded library")
    (tmp_path / "x.c").write_text("int x(void) { return 1; }\n")
    padded = tmp_path / "libpadded.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", padded, tmp_path / "x.c", f"-Wl,-rpath,{tmp_path}::::",
                    "-Wl,--enable-new-dtags"], check=True)
    assert runpath(padded) == [str(tmp_path), "", "", "", ""]
    with pytest.raises(AssertionError, match="empty RUNPATH entries"):
        assert_real_runpath(padded)
