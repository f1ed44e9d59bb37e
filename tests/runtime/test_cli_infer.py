"""der-infer: formats parsed back, skipped files and --strict, errors as one line, --cam overlays."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from der_deploy.cli.infer import main
from der_deploy.images import load_and_preprocess, stack


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def cli(*args, env=None, timeout=120):
    """der-infer in a real subprocess, as a user would run it."""
    code = "import sys; from der_deploy.cli.infer import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *map(os.fspath, args)], capture_output=True, text=True,
                          env={**os.environ, "DER_NO_PROGRESS": "1", **(env or {})}, timeout=timeout)


@pytest.fixture
def reference(tiny_model, image_folder):
    _, files, bad = image_folder
    good = [f for f in files if f not in bad]
    scores = tiny_model.reference(stack([load_and_preprocess(f, tiny_model.card) for f in good]))["scores"]
    return {str(f): s for f, s in zip(good, scores)}


def _labels(scores, classes, thresholds):
    keep = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= thresholds[i]]
    return [classes[i] for i in keep]


def test_jsonl(tiny_model, image_folder, reference):
    root, files, bad = image_folder
    res = run("--engine", tiny_model.path, root, "--format", "jsonl", "--batch-size", "3", "--workers", "2")
    assert res.exit_code == 0, res.stderr
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["path"] for r in recs] == [str(f) for f in files]
    classes, th = tiny_model.card.classes, tiny_model.card.thresholds
    for r in recs:
        if r["path"] in map(str, bad):
            assert set(r) == {"path", "error"}
            continue
        assert set(r) == {"path", "labels", "scores"} and list(r["scores"]) == classes
        want = reference[r["path"]]
        np.testing.assert_allclose([r["scores"][c] for c in classes], want, rtol=1e-5, atol=1e-6)
        assert r["labels"] == _labels(want, classes, th)
    # one line per unreadable file, then a summary; exit code 0 without --strict
    err = res.stderr.splitlines()
    skipped = [line for line in err if line.startswith("skipped ")]
    assert sorted(s.split()[1].rstrip(":") for s in skipped) == sorted(map(str, bad))
    assert "2 of 16 images could not be read and were skipped" in res.stderr


def test_json_csv_and_output_file(tmp_path, tiny_model, image_folder, reference):
    root, files, bad = image_folder
    out = tmp_path / "out" / "preds.json"
    res = run("--engine", tiny_model.path, root, "--format", "json", "-o", out, "--top-k", "2")
    assert res.exit_code == 0 and res.stdout == ""
    recs = json.loads(out.read_text())
    assert [r["path"] for r in recs] == [str(f) for f in files]
    classes = tiny_model.card.classes
    for r in recs:
        if "error" not in r:
            want = reference[r["path"]]
            assert r["labels"] == [classes[i] for i in np.argsort(-want, kind="stable")[:2]]
    assert not [p for p in out.parent.iterdir() if p.name != "preds.json"]  # no temp files left

    res = run("--engine", tiny_model.path, *files[:5], "--format", "csv", "--threshold", "0.5")
    assert res.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(rows[0]) == ["path", "labels", *classes, "error"]
    assert [r["path"] for r in rows] == [str(f) for f in files[:5]]
    for r in rows:
        if r["error"]:
            assert r["path"] in map(str, bad) and r["labels"] == ""
            continue
        got = np.array([float(r[c]) for c in classes])
        np.testing.assert_allclose(got, reference[r["path"]], atol=1e-6)
        assert (r["labels"].split(";") if r["labels"] else []) == _labels(got, classes, [0.5] * 4)


def test_empty_json_list_and_table(tmp_path, tiny_model, image_folder, make_bad):
    only_bad = make_bad(tmp_path / "x" / "bad.jpg", "text")
    res = run("--engine", tiny_model.path, only_bad, "--format", "json")
    assert res.exit_code == 0 and json.loads(res.stdout) == [{"path": str(only_bad), "error": json.loads(res.stdout)[0]["error"]}]
    root, files, _ = image_folder
    res = run("--engine", tiny_model.path, root)
    assert res.exit_code == 0
    for f in files:
        assert f.name in res.stdout
    assert "error:" in res.stdout  # bad files have a row saying why


def test_strict_exit_codes(tiny_model, image_folder):
    root, files, bad = image_folder
    res = run("--engine", tiny_model.path, root, "--format", "jsonl", "--strict")
    assert res.exit_code == 1 and "--strict" in res.stderr
    good = [f for f in files if f not in bad]
    assert run("--engine", tiny_model.path, *good, "--format", "jsonl", "--strict").exit_code == 0


def test_usage_errors(tmp_path, tiny_model, image_folder):
    root, _, _ = image_folder
    res = run("--engine", tiny_model.path, root, "--threshold", "0.5", "--top-k", "2")
    assert res.exit_code == 2 and "mutually exclusive" in res.stderr
    res = run("--engine", tiny_model.path, root, "--top-k", "9")
    assert res.exit_code == 2 and "exceeds the model's 4 classes" in res.stderr
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("x")
    res = run("--engine", tiny_model.path, empty)
    assert res.exit_code == 2 and res.stderr.startswith("error: no image files found in") and len(res.stderr.splitlines()) == 1
    res = run("--engine", tiny_model.path, tmp_path / "nope")
    assert res.exit_code == 2 and "no such file or folder" in res.stderr


def test_engine_errors_are_one_line_without_traceback(tmp_path, image_folder):
    root, _, _ = image_folder
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(os.urandom(2000))
    for engine, words in [(tmp_path / "missing.onnx", "no such file"), (corrupt, "not a valid ONNX model")]:
        res = cli("--engine", engine, root)
        assert res.returncode == 2, res.stderr
        assert res.stdout == "" and "Traceback" not in res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(engine) in lines[0] and words in lines[0]


def test_missing_provider_subprocess(tiny_model, image_folder):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider installed")
    root, _, _ = image_folder
    res = cli("--engine", tiny_model.path, root, "--providers", "cuda")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "CUDAExecutionProvider is not available" in lines[0]


def test_cam_overlays(tmp_path, tiny_model, image_folder):
    root, files, bad = image_folder
    cam = tmp_path / "cams"
    out = tmp_path / "preds.jsonl"
    res = run("--engine", tiny_model.path, root, "--format", "jsonl", "-o", out, "--cam", cam, "--top-k", "2")
    assert res.exit_code == 0, res.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    written = sorted(p.name for p in cam.iterdir())
    expected = []
    for r in recs:
        if "error" in r:
            continue
        stem = os.path.splitext(os.path.basename(r["path"]))[0]
        size = Image.open(r["path"]).size
        for label in r["labels"]:
            name = f"{stem}_{label.replace(' ', '_').replace('/', '_')}.png"
            expected.append(name)
            with Image.open(cam / name) as img:
                assert img.format == "PNG" and img.size == size and img.mode == "RGB"
    assert written == sorted(expected) and len(written) == 2 * (len(files) - len(bad))


def test_cam_needs_cadm_engine(tmp_path, no_cadm_model, image_folder):
    root, _, _ = image_folder
    res = cli("--engine", no_cadm_model.path, root, "--cam", tmp_path / "cams")
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {no_cadm_model.path} has no 'cadm' output; re-export with der-export --cadm"


@pytest.mark.slow
def test_trained_model_cli_with_cam(tmp_path, tiny_onnx, synth_voc):
    files = sorted((synth_voc / "JPEGImages").glob("*.jpg"))[:12]
    res = run("--engine", tiny_onnx, *files, "--format", "jsonl", "--cam", tmp_path / "cams", "--top-k", "1")
    assert res.exit_code == 0, res.stderr
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["path"] for r in recs] == [str(f) for f in files]
    pngs = list((tmp_path / "cams").glob("*.png"))
    assert len(pngs) == len(files)
    for r in recs:
        assert len(r["labels"]) == 1 and r["labels"][0] == max(r["scores"], key=r["scores"].get)


def test_cam_building_blocks(tmp_path):
    from der_deploy.runtime.cam import CamWriter, colormap, normalise, overlay, safe_name, upsample

    lut = colormap()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[0]) == (0, 0, 128) and tuple(lut[-1]) == (128, 0, 0)  # cold = dark blue, hot = dark red
    m = np.array([[1.0, 3.0], [5.0, 9.0]], np.float32)
    np.testing.assert_allclose(normalise(m), (m - 1) / 8)
    assert not normalise(np.full((3, 3), 7.0)).any()
    # bilinear upsampling of a ramp stays a ramp between the outermost pixel centres
    ramp = np.tile(np.arange(4, dtype=np.float32), (4, 1))
    up = upsample(ramp, (16, 8))  # (W, H) -> array (8, 16)
    assert up.shape == (8, 16)
    np.testing.assert_allclose(np.diff(up[0, 2:14]), 0.25, atol=1e-5)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 16, 3), dtype=np.uint8), "RGB")
    assert np.array_equal(np.asarray(overlay(img, ramp, alpha=0.0)), np.asarray(img))
    full = np.asarray(overlay(img, ramp, alpha=1.0))
    assert tuple(full[0, 0]) == (0, 0, 128) and tuple(full[0, -1]) == (128, 0, 0)
    assert safe_name("tree/bush dog") == "tree_bush_dog" and safe_name("../..") == "_"
    writer = CamWriter(tmp_path / "c", ["a b", "a/b", "x"])
    cadm = np.stack([ramp, -ramp, ramp.T])
    first = writer.write(img, cadm, ["a b", "a/b"], "dir1/photo.jpg")
    second = writer.write(img, cadm, ["x"], "dir2/photo.jpg")  # same stem in another folder: no overwrite
    assert [p.name for p in first] == ["photo_a_b.png", "photo_a_b-1.png"]
    assert [p.name for p in second] == ["photo-2_x.png"]
    assert all(Image.open(p).size == (16, 8) for p in first + second)


# --- issue 11 §3: output format from -o, non-UTF-8 names, FIFOs and special entries --------------------------
def test_format_follows_the_output_suffix(tmp_path, tiny_model, image_folder):
    root, files, _ = image_folder
    outs = {s: tmp_path / f"preds{s}" for s in (".json", ".jsonl", ".csv", ".JSON")}
    for suffix, out in outs.items():
        res = run("--engine", tiny_model.path, root, "-o", out)
        assert res.exit_code == 0, res.stderr
    assert [r["path"] for r in json.loads(outs[".json"].read_text())] == [str(f) for f in files]
    assert json.loads(outs[".JSON"].read_text()) == json.loads(outs[".json"].read_text())
    assert [json.loads(line)["path"] for line in outs[".jsonl"].read_text().splitlines()] == [str(f) for f in files]
    assert [r["path"] for r in csv.DictReader(io.StringIO(outs[".csv"].read_text()))] == [str(f) for f in files]
    res = run("--engine", tiny_model.path, root, "-o", tmp_path / "preds.txt")
    assert res.exit_code == 2 and "cannot tell the format from preds.txt" in res.stderr and "--format" in res.stderr
    assert not (tmp_path / "preds.txt").exists()
    res = run("--engine", tiny_model.path, root, "-o", tmp_path / "table.json", "--format", "table")  # asked for
    assert res.exit_code == 0 and "labels (score)" in (tmp_path / "table.json").read_text()


def test_non_utf8_file_names_in_every_format(tmp_path, tiny_model, make_image):
    from der_deploy.pathtext import path_from_text, path_text

    folder = tmp_path / "imgs"
    latin1 = make_image(folder / os.fsdecode(b"caf\xe9.png"), 1)
    backslash = make_image(folder / "a\\b.png", 2)
    expected = [path_text(backslash), path_text(latin1)]
    assert expected[1].endswith("caf\\xe9.png")
    for fmt in ("json", "jsonl", "csv", "table"):
        out = tmp_path / f"out.{fmt}"
        res = cli("--engine", tiny_model.path, folder, "--format", fmt, "-o", out)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        text = out.read_bytes().decode("utf-8")  # strict: no surrogates reached the file
        if fmt == "json":
            paths = [r["path"] for r in json.loads(text)]
        elif fmt == "jsonl":
            paths = [json.loads(line)["path"] for line in text.splitlines()]
        elif fmt == "csv":
            paths = [r["path"] for r in csv.DictReader(io.StringIO(text))]
        else:
            paths = [p for p in expected if p in text]
        assert paths == expected, (fmt, text)
        assert [path_from_text(p) for p in paths] == [backslash, latin1]
        assert "\\udc" not in text and "\udce9" not in text
    res = cli("--engine", tiny_model.path, folder)  # table on stdout, no -o
    assert res.returncode == 0 and expected[1] in res.stdout, res.stderr


def test_fifo_on_the_command_line_is_an_error_record_not_a_hang(tmp_path, tiny_model, make_image):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    good = make_image(tmp_path / "good.png", 3)
    try:
        res = cli("--engine", tiny_model.path, fifo, good, "--format", "jsonl", timeout=60)
    finally:
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # releases a reader that did open it (before the fix)
        os.close(fd)
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert recs[0] == {"path": str(fifo), "error": f"{fifo}: not a regular file (a FIFO); name an image file"}
    assert recs[1]["path"] == str(good) and "scores" in recs[1]


def test_dangling_links_and_fifos_in_folders_are_counted(tmp_path, tiny_model, make_image):
    folder = tmp_path / "imgs"
    make_image(folder / "ok.png", 4)
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    os.mkfifo(folder / "pipe.png")
    res = cli("--engine", tiny_model.path, folder, "--format", "jsonl", timeout=60)
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["path"] for line in res.stdout.splitlines()] == [str(folder / "ok.png")]
    summary = res.stderr.strip().splitlines()[-1]
    assert summary.startswith("1 images in ") and summary.endswith("; skipped in folders: 1 dangling symlink, 1 FIFO")
