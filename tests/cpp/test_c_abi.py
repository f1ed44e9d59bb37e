"""The C ABI (der.h) through ctypes, against the Python Predictor on the trained model: the JSON records and
the typed ones (der_prediction), which must agree with each other exactly."""
from __future__ import annotations

import ctypes
import json
import math

import numpy as np
import pytest

from der_deploy.images import load_and_preprocess, load_image
from der_deploy.runtime.predictor import Predictor

TOL = 1e-5


class DerPrediction(ctypes.Structure):
    """der.h's der_prediction."""
    _fields_ = [("path", ctypes.c_char_p), ("error", ctypes.c_char_p), ("num_labels", ctypes.c_size_t),
                ("label_ids", ctypes.POINTER(ctypes.c_int)), ("labels", ctypes.POINTER(ctypes.c_char_p)),
                ("num_scores", ctypes.c_size_t), ("scores", ctypes.POINTER(ctypes.c_float))]


@pytest.fixture(scope="module")
def lib(cpp_build):
    so = ctypes.CDLL(str(cpp_build / "libder_runtime.so"))
    P = ctypes.c_void_p
    so.der_version.restype = ctypes.c_char_p
    so.der_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(P)]
    so.der_predict_files.argtypes = [P, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, ctypes.c_double,
                                     ctypes.c_int, ctypes.POINTER(P)]
    so.der_predict_pixels.argtypes = [P, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_size_t,
                                      ctypes.c_double, ctypes.c_int, ctypes.POINTER(P)]
    so.der_scores.argtypes = [P, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    so.der_card_json.argtypes = [P, ctypes.POINTER(P)]
    so.der_free_string.argtypes = [P]
    so.der_last_error.argtypes = [P]
    so.der_last_error.restype = ctypes.c_char_p
    so.der_destroy.argtypes = [P]
    Rec = ctypes.POINTER(DerPrediction)
    so.der_classes.argtypes = [P, ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p)), ctypes.POINTER(ctypes.c_size_t)]
    so.der_predict_files_typed.argtypes = [P, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, ctypes.c_double,
                                           ctypes.c_int, ctypes.POINTER(Rec), ctypes.POINTER(ctypes.c_size_t)]
    so.der_predict_pixels_typed.argtypes = [P, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_size_t,
                                            ctypes.c_double, ctypes.c_int, ctypes.POINTER(Rec)]
    so.der_release_predictions.argtypes = [Rec, ctypes.c_size_t]
    so.der_release_predictions.restype = None
    return so


def take_string(lib, ptr: ctypes.c_void_p) -> str:
    text = ctypes.string_at(ptr).decode("utf-8")
    lib.der_free_string(ptr)
    return text


@pytest.fixture(scope="module")
def handle(lib, tiny_onnx):
    h = ctypes.c_void_p()
    rc = lib.der_create(str(tiny_onnx).encode(), b'{"batch_size": 4, "decode_threads": 2}', ctypes.byref(h))
    assert rc == 0, lib.der_last_error(None)
    yield h
    lib.der_destroy(h)


@pytest.fixture(scope="module")
def py_pred(tiny_onnx):
    with Predictor(tiny_onnx, batch_size=4) as p:
        yield p


def test_version_and_card(lib, handle, py_pred):
    assert lib.der_version().decode().count(".") == 2
    out = ctypes.c_void_p()
    assert lib.der_card_json(handle, ctypes.byref(out)) == 0
    card = json.loads(take_string(lib, out))
    assert card["classes"] == py_pred.card.classes
    assert tuple(card["input_size"]) == tuple(py_pred.card.input_size)
    assert card["thresholds"] == pytest.approx(py_pred.card.thresholds)


@pytest.mark.parametrize("threshold,top_k", [(-1.0, 0), (0.3, 0), (-1.0, 2), (0.4, 2)])
def test_predict_files_matches_python(lib, handle, py_pred, synth_voc, tmp_path, threshold, top_k):
    files = sorted((synth_voc / "JPEGImages").glob("*.jpg"))[:10]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = [str(p) for p in files[:5]] + [str(broken)] + [str(p) for p in files[5:]]
    arr = (ctypes.c_char_p * len(paths))(*[p.encode() for p in paths])
    out = ctypes.c_void_p()
    rc = lib.der_predict_files(handle, arr, len(paths), threshold, top_k, ctypes.byref(out))
    assert rc == 0, lib.der_last_error(handle)
    got = json.loads(take_string(lib, out))
    want = py_pred.predict(paths, threshold=None if threshold < 0 else threshold, top_k=top_k or None)
    assert [g["path"] for g in got] == paths
    for g, w in zip(got, want):
        assert ("error" in g) == (w.error is not None), g
        if w.error is None:
            assert g["labels"] == w.labels
            assert list(g["scores"]) == py_pred.card.classes
            assert max(abs(g["scores"][c] - w.scores[c]) for c in w.scores) <= TOL
    assert got[5]["error"].startswith(str(broken) + ": ")


def test_predict_pixels_and_scores_match_python(lib, handle, py_pred, synth_voc):
    path = sorted((synth_voc / "JPEGImages").glob("*.jpg"))[3]
    img = load_image(path)
    rgb = np.ascontiguousarray(np.asarray(img), dtype=np.uint8)
    # A padded stride: the C side must honour it.
    padded = np.zeros((rgb.shape[0], rgb.shape[1] * 3 + 5), np.uint8)
    padded[:, : rgb.shape[1] * 3] = rgb.reshape(rgb.shape[0], -1)
    out = ctypes.c_void_p()
    rc = lib.der_predict_pixels(handle, padded.ctypes.data, img.width, img.height, padded.shape[1], -1.0, 0,
                                ctypes.byref(out))
    assert rc == 0, lib.der_last_error(handle)
    got = json.loads(take_string(lib, out))
    (want,) = py_pred.predict(img)
    assert got["labels"] == want.labels
    assert max(abs(got["scores"][c] - want.scores[c]) for c in want.scores) <= TOL

    x = np.stack([load_and_preprocess(path, py_pred.card)] * 3).astype(np.float32)
    probs = np.zeros((3, py_pred.card.num_classes), np.float32)
    assert lib.der_scores(handle, x.ctypes.data, 3, probs.ctypes.data, probs.size) == 0
    np.testing.assert_allclose(probs, py_pred.scores(x), atol=TOL)


def test_errors_are_strings_per_handle(lib, handle, tmp_path):
    h = ctypes.c_void_p()
    missing = tmp_path / "missing.onnx"
    assert lib.der_create(str(missing).encode(), None, ctypes.byref(h)) == 4  # DER_ERROR_ENGINE
    assert not h.value
    assert lib.der_last_error(None).decode() == (
        f"{missing}: no such file; check the path or export the model with der-export")
    out = ctypes.c_void_p()
    rgb = np.zeros((4, 4, 3), np.uint8)
    assert lib.der_predict_pixels(handle, rgb.ctypes.data, 4, 4, 0, 1.5, 0, ctypes.byref(out)) == 1
    assert lib.der_last_error(handle).decode() == "threshold must be a probability in [0, 1], got 1.5"
    assert lib.der_predict_pixels(handle, rgb.ctypes.data, 0, 4, 0, math.nan, 0, ctypes.byref(out)) == 1
    assert "positive width and height" in lib.der_last_error(handle).decode()


def typed_record(r: DerPrediction) -> dict:
    """A typed record as plain Python (read before der_release_predictions)."""
    out = {"path": r.path, "error": None if r.error is None else r.error.decode("utf-8")}
    out["labels"] = [r.labels[i].decode("utf-8") for i in range(r.num_labels)]
    out["label_ids"] = [r.label_ids[i] for i in range(r.num_labels)]
    out["scores"] = [r.scores[i] for i in range(r.num_scores)]
    if r.num_labels == 0:
        assert not r.labels and not r.label_ids  # NULL, as der.h says
    if r.num_scores == 0:
        assert not r.scores
    return out


def test_classes(lib, handle, py_pred):
    names = ctypes.POINTER(ctypes.c_char_p)()
    n = ctypes.c_size_t()
    assert lib.der_classes(handle, ctypes.byref(names), ctypes.byref(n)) == 0
    assert [names[i].decode() for i in range(n.value)] == py_pred.card.classes


@pytest.mark.parametrize("threshold,top_k", [(-1.0, 0), (0.3, 0), (-1.0, 2), (0.4, 2)])
def test_typed_files_equal_json_and_python(lib, handle, py_pred, synth_voc, tmp_path, threshold, top_k):
    files = sorted((synth_voc / "JPEGImages").glob("*.jpg"))[:6]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = [str(p) for p in files[:3]] + [str(broken), str(tmp_path / "missing.png")] + [str(p) for p in files[3:]]
    arr = (ctypes.c_char_p * len(paths))(*[p.encode() for p in paths])
    text = ctypes.c_void_p()
    assert lib.der_predict_files(handle, arr, len(paths), threshold, top_k, ctypes.byref(text)) == 0
    as_json = json.loads(take_string(lib, text))
    out = ctypes.POINTER(DerPrediction)()
    n = ctypes.c_size_t()
    rc = lib.der_predict_files_typed(handle, arr, len(paths), threshold, top_k, ctypes.byref(out), ctypes.byref(n))
    assert rc == 0, lib.der_last_error(handle)
    try:
        got = [typed_record(out[i]) for i in range(n.value)]
    finally:
        lib.der_release_predictions(out, n)
    want = py_pred.predict(paths, threshold=None if threshold < 0 else threshold, top_k=top_k or None)
    classes = py_pred.card.classes
    assert [g["path"] for g in got] == [p.encode() for p in paths]
    for g, j, w in zip(got, as_json, want):
        assert g["error"] == j.get("error"), g  # per record, worded as in the JSON
        assert (g["error"] is None) == (w.error is None), g
        if g["error"] is None:
            assert g["labels"] == j["labels"] == w.labels
            assert [classes[i] for i in g["label_ids"]] == g["labels"]
            assert g["scores"] == [np.float32(j["scores"][c]) for c in classes]  # exactly the JSON's floats
            assert max(abs(s - w.scores[c]) for s, c in zip(g["scores"], classes)) <= TOL
        else:
            assert g["labels"] == [] and g["scores"] == []
    assert got[3]["error"].startswith(str(broken) + ": ")
    assert got[4]["error"].startswith(str(tmp_path / "missing.png") + ": ")


def test_typed_pixels_equal_json_and_python(lib, handle, py_pred, synth_voc):
    img = load_image(sorted((synth_voc / "JPEGImages").glob("*.jpg"))[2])
    rgb = np.ascontiguousarray(np.asarray(img), dtype=np.uint8)
    text = ctypes.c_void_p()
    assert lib.der_predict_pixels(handle, rgb.ctypes.data, img.width, img.height, 0, 0.4, 0, ctypes.byref(text)) == 0
    as_json = json.loads(take_string(lib, text))
    out = ctypes.POINTER(DerPrediction)()
    assert lib.der_predict_pixels_typed(handle, rgb.ctypes.data, img.width, img.height, 0, 0.4, 0,
                                        ctypes.byref(out)) == 0, lib.der_last_error(handle)
    got = typed_record(out[0])
    lib.der_release_predictions(out, 1)
    (want,) = py_pred.predict(img, threshold=0.4)
    assert got["path"] == b"" and got["error"] is None
    assert got["labels"] == as_json["labels"] == want.labels
    assert got["scores"] == [np.float32(as_json["scores"][c]) for c in py_pred.card.classes]
    assert max(abs(s - want.scores[c]) for s, c in zip(got["scores"], py_pred.card.classes)) <= TOL


def test_typed_errors(lib, handle):
    rgb = np.zeros((4, 4, 3), np.uint8)
    out = ctypes.POINTER(DerPrediction)()
    assert lib.der_predict_pixels_typed(handle, rgb.ctypes.data, 4, 4, 0, 1.5, 0, ctypes.byref(out)) == 1
    assert not out  # nothing to release on failure
    assert lib.der_last_error(handle).decode() == "threshold must be a probability in [0, 1], got 1.5"
    n = ctypes.c_size_t(5)
    assert lib.der_predict_files_typed(handle, None, 0, -1.0, 0, ctypes.byref(out), ctypes.byref(n)) == 0
    assert not out and n.value == 0
    lib.der_release_predictions(out, 0)  # NULL: a no-op


def test_max_pixels_gives_the_clis_too_large_record(lib, tiny_onnx, synth_voc, der_infer_cpp, tmp_path):
    """der_create's "max_pixels": an image above it is a per-file error record, worded as der-infer-cpp's
    --max-pixels and der-infer's; an image within it is scored."""
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    from der_deploy.images import load_image

    big = sorted((synth_voc / "JPEGImages").glob("*.jpg"))[0]
    w, h = load_image(big).size
    small = tmp_path / "small.png"
    Image.new("RGB", (w // 2, h // 2), (120, 30, 200)).save(small)
    files, limit = [big, small], w * h - 1  # one pixel over for `big`
    handle = ctypes.c_void_p()
    opts = json.dumps({"max_pixels": limit, "decode_threads": 0}).encode()
    assert lib.der_create(str(tiny_onnx).encode(), opts, ctypes.byref(handle)) == 0, lib.der_last_error(None)
    try:
        arr = (ctypes.c_char_p * len(files))(*[str(p).encode() for p in files])
        out = ctypes.c_void_p()
        assert lib.der_predict_files(handle, arr, len(files), -1.0, 0, ctypes.byref(out)) == 0
        got = json.loads(take_string(lib, out))
    finally:
        lib.der_destroy(handle)
    assert got[0]["error"] == f"{big}: too large: {w}\u00d7{h} > {limit} pixels; raise --max-pixels", got[0]
    assert "error" not in got[1] and list(got[1]["scores"]), got[1]
    clis = {}
    for name, exe in (("cpp", der_infer_cpp), ("py", Path(sys.executable).with_name("der-infer"))):
        target = tmp_path / f"{name}.jsonl"
        proc = subprocess.run([str(exe), "--engine", str(tiny_onnx), "--max-pixels", str(limit), *map(str, files),
                               "-o", str(target)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        clis[name] = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert got[0]["error"] == clis["cpp"][0]["error"] == clis["py"][0]["error"]
    assert got[1]["labels"] == clis["cpp"][1]["labels"] == clis["py"][1]["labels"]
