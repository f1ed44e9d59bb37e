"""der-infer-cpp against der-infer on the same trained engine and the same inputs.

Inputs: the synthetic demo images, photo-like camera JPEGs (EXIF orientations, progressive, 4:4:4/4:2:2/4:2:0,
PNG) and a folder of bad and odd files (corrupt, truncated, empty, non-image, CMYK, 16-bit, RGBA, palette,
1x1, very wide, nested folders, BMP/GIF/WebP/TIFF/PPM, non-UTF-8 names, a FIFO, a dangling symlink).
Both CLIs must list the same paths in the same order, agree on ok/error per file, give identical labels and
scores within 1e-5, and skip and count the same folder entries.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpp_corpus import make_bad, make_photos

PY_INFER = Path(sys.executable).with_name("der-infer")
TOL = 1e-5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, synth_voc):
    root = tmp_path_factory.mktemp("cpp-parity")
    photos = make_photos(root)
    bad, fifo = make_bad(root)
    demo = sorted((synth_voc / "JPEGImages").glob("*.jpg"))
    return {"root": root, "photos": photos, "bad": bad, "fifo": fifo, "demo_dir": synth_voc / "JPEGImages",
            "demo": demo}


def run(cmd, cwd=None, timeout=600):
    env = dict(os.environ, DER_NO_PROGRESS="1")
    return subprocess.run([str(c) for c in cmd], capture_output=True, timeout=timeout, cwd=cwd, env=env)


def both(der_infer_cpp, engine, inputs, tmp_path, *opts, suffix=".jsonl", cwd=None):
    """Run both CLIs writing -o files; returns ((rc, text, stderr) for Python, the same for C++)."""
    out = []
    for name, exe in (("py", PY_INFER), ("cpp", der_infer_cpp)):
        target = tmp_path / f"{name}{suffix}"
        proc = run([exe, "--engine", engine, *inputs, *opts, "-o", target], cwd=cwd)
        text = target.read_text(encoding="utf-8") if target.exists() else None
        out.append((proc.returncode, text, proc.stderr.decode("utf-8", "replace")))
    return out


def records(text: str, fmt: str) -> list[dict]:
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    if fmt == "json":
        return json.loads(text)
    return list(csv.DictReader(io.StringIO(text)))


def assert_same(py: list[dict], cpp: list[dict], classes: list[str] | None = None) -> None:
    """Every difference at once (path, what), so one run shows the whole picture."""
    assert [r["path"] for r in cpp] == [r["path"] for r in py]
    diffs = []
    for a, b in zip(py, cpp):
        where = a["path"]
        if classes is not None:  # csv rows
            if bool(a["error"]) != bool(b["error"]):
                diffs.append((where, "status", a["error"], b["error"]))
            elif a["labels"] != b["labels"]:
                diffs.append((where, "labels", a["labels"], b["labels"]))
            else:
                bad = [c for c in classes if (a[c] or b[c]) and abs(float(a[c]) - float(b[c])) > TOL + 1e-6]
                if bad:  # +1e-6: both sides round to "%.6f"
                    diffs.append((where, "scores", [a[c] for c in bad], [b[c] for c in bad]))
            continue
        if ("error" in a) != ("error" in b):
            diffs.append((where, "status", a.get("error"), b.get("error")))
        elif "error" in a:
            if not b["error"].startswith(where + ": "):
                diffs.append((where, "error text", a["error"], b["error"]))
        elif b["labels"] != a["labels"]:
            diffs.append((where, "labels", a["labels"], b["labels"]))
        elif list(b["scores"]) != list(a["scores"]):
            diffs.append((where, "class order", list(a["scores"]), list(b["scores"])))
        else:
            worst = max(abs(b["scores"][c] - v) for c, v in a["scores"].items())
            if worst > TOL:
                diffs.append((where, f"scores differ by {worst:.3g}", a["scores"], b["scores"]))
    assert not diffs, f"{len(diffs)} of {len(py)} records differ:\n" + "\n".join(map(repr, diffs))


def summary_tail(stderr: str) -> str:
    last = [ln for ln in stderr.splitlines() if "img/s end-to-end" in ln]
    assert len(last) == 1, stderr
    return last[0].split(")", 1)[1] if ")" in last[0] else ""  # "; skipped in folders: ..." or ""


def test_everything_at_once_matches_python(der_infer_cpp, tiny_onnx, corpus, tmp_path):
    inputs = [corpus["demo_dir"], corpus["photos"], corpus["bad"], corpus["fifo"]]
    (prc, ptext, perr), (crc, ctext, cerr) = both(der_infer_cpp, tiny_onnx, inputs, tmp_path)
    assert prc == 0, perr
    assert crc == 0, cerr
    py, cpp = records(ptext, "jsonl"), records(ctext, "jsonl")
    assert len(py) > 800
    assert_same(py, cpp)
    # The bad folder really exercised both paths: decoded odd files and refused broken ones.
    by_path = {r["path"]: r for r in cpp}
    bad = str(corpus["bad"])
    for name in ("corrupt.jpg", "truncated.jpg", "empty.png", "notes.jpg"):
        assert "error" in by_path[f"{bad}/{name}"], name
    assert "error" in by_path[str(corpus["fifo"])]
    for name in ("rotated.jpg", "cmyk.jpg", "gray16.png", "rgba.png", "palette.png", "one.png", "wide.png",
                 "nested/deeper/c.webp", "caf\\xe9.jpg", "back\\\\slash.png", "\\xff\\xfe.png", "ünïcödé.jpg"):
        assert "labels" in by_path[f"{bad}/{name}"], name
    assert f"{bad}/pipe.jpg" not in by_path and f"{bad}/dangling.jpg" not in by_path
    assert not any("/.hidden/" in p or "/.dotfile" in p for p in by_path)
    # Same skipped lines and the same folder-skip clause in the summary.
    def skipped(err: str) -> int:
        return sum(line.startswith("skipped ") for line in err.splitlines())

    assert skipped(cerr) == skipped(perr) == sum("error" in r for r in py)
    assert summary_tail(cerr) == summary_tail(perr) == "; skipped in folders: 1 dangling symlink, 1 FIFO"


@pytest.mark.parametrize("opts", [["--threshold", "0.3"], ["--top-k", "2"],
                                  ["--batch-size", "3", "--top-k", "1", "--workers", "0"]],
                         ids=["threshold", "top-k", "batch3-top1-inline"])
def test_decision_options_match_python(der_infer_cpp, tiny_onnx, corpus, tmp_path, opts):
    inputs = [corpus["photos"], corpus["bad"], *corpus["demo"][:40]]
    (prc, ptext, perr), (crc, ctext, cerr) = both(der_infer_cpp, tiny_onnx, inputs, tmp_path, *opts)
    assert prc == crc == 0, (perr, cerr)
    py, cpp = records(ptext, "jsonl"), records(ctext, "jsonl")
    assert_same(py, cpp)
    if "--top-k" in opts:
        k = int(opts[opts.index("--top-k") + 1])
        assert all(len(r["labels"]) == k for r in cpp if "labels" in r)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_json_match_python(der_infer_cpp, tiny_onnx, corpus, tmp_path, fmt):
    inputs = [corpus["photos"], corpus["bad"], *corpus["demo"][:20]]
    (prc, ptext, perr), (crc, ctext, cerr) = both(der_infer_cpp, tiny_onnx, inputs, tmp_path, suffix="." + fmt)
    assert prc == crc == 0, (perr, cerr)
    py, cpp = records(ptext, fmt), records(ctext, fmt)
    if fmt == "csv":
        header_py = ptext.splitlines()[0]
        assert ctext.splitlines()[0] == header_py
        classes = header_py.split(",")[2:-1]
        assert_same(py, cpp, classes)
    else:
        assert_same(py, cpp)


def test_relative_paths_and_strict_exit(der_infer_cpp, tiny_onnx, corpus, tmp_path):
    # Relative spellings ("./bad//") are printed as pathlib prints them; --strict exits 1 in both.
    (prc, ptext, perr), (crc, ctext, cerr) = both(der_infer_cpp, tiny_onnx, ["./bad//", "photos/"], tmp_path,
                                                  "--strict", cwd=corpus["root"])
    assert prc == crc == 1, (perr, cerr)
    assert_same(records(ptext, "jsonl"), records(ctext, "jsonl"))
    assert records(ctext, "jsonl")[0]["path"].startswith("bad/")
