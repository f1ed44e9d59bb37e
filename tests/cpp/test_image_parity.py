"""The C++ SDK's image layer (runtime/cpp/src/image) against Pillow and der_deploy.images, byte for byte.

Drives the `der_image_tool` test executable (built by `make cpp` into build/cpp/tests/, or the path in
$DER_IMAGE_TOOL) on a corpus generated here: resize must equal Pillow's Image.resize exactly for every filter,
decoding must give load_image's pixels and error status for every file, and decode + preprocess must give
load_and_preprocess's tensor to 1e-6 -- each also with shrink-on-load (draft) and with a max_pixels limit.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import ImageError
from der_deploy.images import load_and_preprocess, load_image

from cpp_corpus import (BAD_INPUTS, build_bad_inputs, build_corpus, make_photos, noise as _noise,
                        noninterleaved_jpeg, smooth as _smooth)

REPO = Path(__file__).resolve().parents[2]
# Shrink-on-load targets (H, W) for the small corpus: 1/8, 1/4, 1/2 and 1 all occur, sideways EXIF swaps the sides.
DRAFTS = [None, (15, 20), (4, 3)]
INTERPS = ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]
PIL_FILTER = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


@pytest.fixture(scope="module")
def tool() -> Path:
    env = os.environ.get("DER_IMAGE_TOOL")
    if env:
        path = Path(env)
    else:
        build = REPO / "build" / "cpp"
        if not build.is_dir() and not os.environ.get("CI"):
            pytest.skip("C++ SDK not built (no build/cpp); run `make cpp` or set DER_IMAGE_TOOL")
        path = build / "tests" / "der_image_tool"
    if not path.is_file():
        pytest.fail(f"{path} is missing; `make cpp` should build it (or point DER_IMAGE_TOOL at it)")
    return path


def run(tool: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, timeout=120)


def write_raw(path: Path, arr: np.ndarray) -> None:
    h, w, _ = arr.shape
    path.write_bytes(f"{w} {h}\n".encode() + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def read_raw(path: Path) -> np.ndarray:
    data = path.read_bytes()
    head, body = data.split(b"\n", 1)
    w, h = map(int, head.split())
    return np.frombuffer(body, dtype=np.uint8).reshape(h, w, 3)


def _options(draft: tuple[int, int] | None, max_pixels: int | None) -> list:
    return (([] if draft is None else ["--draft", draft[1], draft[0]])
            + ([] if max_pixels is None else ["--max-pixels", max_pixels]))


def cpp_decode(tool: Path, src: Path, tmp: Path, draft=None, max_pixels=None) -> np.ndarray | str:
    """Decoded pixels, or the error message the tool printed."""
    out = tmp / (src.name + ".raw")
    res = run(tool, "decode", src, out, *_options(draft, max_pixels))
    if res.returncode == 1 and res.stdout.startswith("error: "):
        return res.stdout[len("error: "):].strip()
    assert res.returncode == 0, f"der_image_tool crashed on {src.name}: rc={res.returncode} {res.stderr}"
    return read_raw(out)


def py_decode(src: Path, draft=None, max_pixels=None) -> np.ndarray | str:
    try:
        return np.asarray(load_image(src, draft=draft, max_pixels=max_pixels))
    except ImageError as err:
        return str(err)


# ---------------------------------------------------------------------------------------------------- resize

RESIZE_SOURCES = [(1, 1), (3, 2), (1, 4000), (4000, 1), (9, 17), (480, 640), (517, 333), (64, 64), (100, 7)]
RESIZE_TARGETS = [(448, 448), (64, 64), (37, 91), (1, 1), (5, 300)]


@pytest.mark.parametrize("interp", INTERPS)
def test_resize_equals_pillow(tool: Path, tmp_path: Path, interp: str) -> None:
    mismatches = []
    for i, (h, w) in enumerate(RESIZE_SOURCES):
        for kind, make in (("noise", _noise), ("smooth", _smooth)):
            if kind == "smooth" and h * w < 4:
                continue
            arr = make(h, w, i)
            src = tmp_path / f"{kind}_{h}x{w}.raw"
            write_raw(src, arr)
            targets = RESIZE_TARGETS + [(h, w), (max(1, h // 3), w * 2 + 1), (h * 3 + 2, max(1, w // 2))]
            for th, tw in targets:
                if th * tw > 4_000_000:
                    continue
                out = tmp_path / "out.raw"
                res = run(tool, "resize", src, tw, th, interp, out)
                assert res.returncode == 0, res.stdout + res.stderr
                got = read_raw(out)
                want = np.asarray(Image.fromarray(arr, "RGB").resize((tw, th), PIL_FILTER[interp]))
                if got.shape != want.shape or not np.array_equal(got, want):
                    diff = int(np.abs(got.astype(int) - want.astype(int)).max()) if got.shape == want.shape else -1
                    mismatches.append(f"{kind} {w}x{h} -> {tw}x{th}: max diff {diff}")
    assert not mismatches, f"{interp}: {len(mismatches)} resizes differ from Pillow: {mismatches[:10]}"


def test_resize_rejects_bad_sizes(tool: Path, tmp_path: Path) -> None:
    src = tmp_path / "a.raw"
    write_raw(src, _noise(4, 4, 0))
    res = run(tool, "resize", src, 0, 5, "bilinear", tmp_path / "o.raw")
    assert res.returncode == 1 and "invalid" in res.stdout
    res = run(tool, "resize", src, 5, 5, "bogus", tmp_path / "o.raw")
    assert res.returncode == 1 and "interpolation 'bogus' is unknown" in res.stdout


# ---------------------------------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("draft", DRAFTS)
def test_decode_matches_load_image(tool: Path, tmp_path: Path, draft) -> None:
    files = build_corpus(tmp_path / "corpus")
    status, pixel_diffs, jpeg_lsb = [], [], []
    for name, path in files.items():
        want, got = py_decode(path, draft), cpp_decode(tool, path, tmp_path, draft)
        if isinstance(want, str) or isinstance(got, str):
            status.append(f"{name}: python={'error' if isinstance(want, str) else 'ok'} "
                          f"c++={'error: ' + got if isinstance(got, str) else 'ok'}")
            continue
        if want.shape != got.shape:
            pixel_diffs.append(f"{name}: shape {got.shape} != {want.shape}")
            continue
        diff = np.abs(want.astype(int) - got.astype(int))
        if diff.max():
            entry = f"{name}: max abs diff {diff.max()}, {int((diff > 0).sum())} values differ"
            (jpeg_lsb if name.endswith(".jpg") else pixel_diffs).append(entry)
    assert not status, f"decode status differs from load_image: {status}"
    assert not pixel_diffs, f"decoded pixels differ from load_image: {pixel_diffs}"
    assert not jpeg_lsb, f"JPEG decode differs from Pillow's (libjpeg-turbo version?): {jpeg_lsb}"


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow warns while reading the broken EXIF on purpose
@pytest.mark.parametrize("draft", [None, (15, 20)])
def test_bad_inputs_are_errors_in_both(tool: Path, tmp_path: Path, draft) -> None:
    good = build_corpus(tmp_path / "corpus")
    bad = build_bad_inputs(tmp_path / "bad", good)
    assert sorted(bad) == sorted(BAD_INPUTS)
    for name, path in bad.items():
        want, got = py_decode(path, draft), cpp_decode(tool, path, tmp_path, draft)
        assert isinstance(want, str), f"{name}: expected load_image to fail"
        assert isinstance(got, str), f"{name}: load_image fails ({want}) but the C++ decoder accepted it"
        assert got.startswith(str(path) + ": "), f"{name}: message does not name the file: {got}"
        if name.startswith("bomb"):
            assert "decompression bomb" in want and "decompression bomb" in got, (want, got)


@pytest.mark.parametrize("interp", INTERPS)
def test_preprocess_matches_load_and_preprocess(tool: Path, tmp_path: Path, interp: str) -> None:
    files = build_corpus(tmp_path / "corpus")
    names = ["q75.jpg", "sub2.jpg", "gray.jpg", "exif6.jpg", "cmyk.jpg", "rgba.png", "p_trns.png", "i16.png",
             "odd_size.jpg", "lossy.webp", "p.gif", "tall.jpg"]
    for (h, w) in [(64, 64), (448, 448), (37, 91)]:
        card = ModelCard(classes=["a", "b"], input_size=(h, w), interpolation=interp)
        for name in names:
            out = tmp_path / "t.f32"
            res = run(tool, "preprocess", files[name], h, w, interp, out)
            assert res.returncode == 0, res.stdout + res.stderr
            got = np.fromfile(out, dtype=np.float32).reshape(3, h, w)
            want = load_and_preprocess(files[name], card)
            assert np.abs(got - want).max() <= 1e-6, f"{name} {interp} {h}x{w}: max diff {np.abs(got - want).max()}"


@pytest.mark.parametrize("interp", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_draft_preprocess_matches_load_and_preprocess(tool: Path, tmp_path: Path, interp: str) -> None:
    """A card with decode="draft": the small corpus at sizes that shrink it 1/2..1/8, and camera-size photos
    (EXIF-rotated, progressive, 4:4:4/4:2:2/4:2:0) at 448x448 and at a portrait 448x224, where a sideways
    photo must be scaled by its upright sides."""
    files = build_corpus(tmp_path / "corpus")
    photos = sorted(make_photos(tmp_path).iterdir()) if interp == "bilinear" else []
    cases = [(files[n], size) for n in ("q75.jpg", "sub2.jpg", "gray.jpg", "exif6.jpg", "exif5.jpg", "cmyk.jpg",
                                       "progressive.jpg", "odd_size.jpg", "tall.jpg", "rgba.png")
             for size in ((15, 20), (7, 9), (30, 11))]
    cases += [(p, size) for p in photos for size in ((448, 448), (448, 224))]
    for path, (h, w) in cases:
        card = ModelCard(classes=["a", "b"], input_size=(h, w), interpolation=interp, decode="draft")
        out = tmp_path / "t.f32"
        res = run(tool, "preprocess", path, h, w, interp, out, "--draft")
        assert res.returncode == 0, res.stdout + res.stderr
        got = np.fromfile(out, dtype=np.float32).reshape(3, h, w)
        want = load_and_preprocess(path, card)
        assert np.abs(got - want).max() <= 1e-6, f"{path.name} {interp} {h}x{w}: max diff {np.abs(got - want).max()}"


def test_max_pixels_matches_load_image(tool: Path, tmp_path: Path) -> None:
    """The limit refuses the same files with the same message, in full and draft decoding: a draft JPEG counts at
    its DCT-scaled size, except a progressive or non-interleaved one, which libjpeg holds at full size."""
    files = build_corpus(tmp_path / "corpus")
    files["noninterleaved.jpg"] = tmp_path / "noninterleaved.jpg"
    files["noninterleaved.jpg"].write_bytes(noninterleaved_jpeg(160, 120))
    seen = {}
    for draft in (None, (15, 20)):
        for limit in (1, 3000, 19200):
            for name, path in files.items():
                want, got = py_decode(path, draft, limit), cpp_decode(tool, path, tmp_path, draft, limit)
                if isinstance(want, str) or isinstance(got, str):
                    assert want == got, f"{name} draft={draft} max_pixels={limit}: python {want!r}, c++ {got!r}"
                else:
                    assert np.array_equal(want, got), f"{name} draft={draft} max_pixels={limit}: pixels differ"
                seen[(name, draft, limit)] = isinstance(want, str)
    assert seen[("q75.jpg", None, 3000)] and not seen[("q75.jpg", (15, 20), 3000)]  # 160x120 vs 1/8: 20x15
    assert seen[("progressive.jpg", (15, 20), 3000)] and seen[("noninterleaved.jpg", (15, 20), 3000)]
    assert not seen[("q75.jpg", None, 19200)] and seen[("wide.png", (15, 20), 3000)]
    msg = py_decode(files["q75.jpg"], None, 3000)
    assert msg.endswith("q75.jpg: too large: 160×120 > 3000 pixels; raise --max-pixels"), msg


def test_formats_outside_the_sdk_are_refused_clearly(tool: Path, tmp_path: Path) -> None:
    """The one documented status difference: formats Pillow reads but the C++ SDK does not decode."""
    cases = {"icon.ico": "ICO"}
    Image.fromarray(_noise(16, 16, 3), "RGB").save(tmp_path / "icon.ico", format="ICO")
    for name in cases:
        assert not isinstance(py_decode(tmp_path / name), str), f"{name}: Pillow should read it"
        got = cpp_decode(tool, tmp_path / name, tmp_path)
        assert isinstance(got, str) and "not supported by the C++ SDK; convert it to PNG/JPEG" in got, got


@pytest.mark.filterwarnings("ignore")  # Pillow warns about the damage it tolerates
@pytest.mark.parametrize("draft", [None, (15, 20)])
def test_damaged_files_match_load_image(tool: Path, tmp_path: Path, draft) -> None:
    """Random truncations and byte flips of the corpus (fixed seed): the C++ decoder must neither crash nor
    disagree with load_image on ok-vs-error, and must give the same pixels when both decode. TIFF is left out:
    Pillow parses TIFF directories itself and reads some damaged ones that libtiff refuses (about 2 in 1,000
    damaged files; see runtime/cpp/src/image/README.md)."""
    import random

    files = build_corpus(tmp_path / "corpus")
    rng = random.Random(20261128)
    names = sorted(n for n in files if not n.endswith(".tif"))
    problems = []
    for i in range(150):
        name = rng.choice(names)
        data = bytearray(files[name].read_bytes())
        if rng.random() < 0.4:
            data = data[: rng.randrange(1, len(data))]
        else:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"damaged{i}{files[name].suffix}"
        path.write_bytes(bytes(data))
        want, got = py_decode(path, draft), cpp_decode(tool, path, tmp_path, draft)
        if isinstance(want, str) != isinstance(got, str):
            problems.append(f"{name} #{i}: python {'error' if isinstance(want, str) else 'ok'}, c++ "
                            f"{'error: ' + got if isinstance(got, str) else 'ok'}")
        elif not isinstance(got, str) and (want.shape != got.shape or not np.array_equal(want, got)):
            problems.append(f"{name} #{i}: pixels differ")
    assert not problems, problems


def _with_card(onnx_path: Path, out: Path, **fields) -> Path:
    """A copy of an ONNX engine whose card JSON has ``fields`` set (raw: may be invalid on purpose)."""
    import json

    import onnx

    from der_deploy.artifact.keys import CARD_KEY

    model = onnx.load(str(onnx_path))
    for prop in model.metadata_props:
        if prop.key == CARD_KEY:
            prop.value = json.dumps({**json.loads(prop.value), **fields})
    onnx.save(model, str(out))
    return out


def test_draft_card_and_max_pixels_end_to_end(der_infer_cpp, tiny_onnx, tmp_path: Path) -> None:
    """der-infer and der-infer-cpp on an engine whose card says decode="draft": the same scores on camera-size
    photos, the same "too large" records under --max-pixels, and the same refusal of an unknown decode mode."""
    import json
    import sys

    engine = _with_card(tiny_onnx, tmp_path / "draft.onnx", decode="draft")
    photos = make_photos(tmp_path)
    runs = {}
    for name, exe in (("py", Path(sys.executable).with_name("der-infer")), ("cpp", der_infer_cpp)):
        out = tmp_path / f"{name}.jsonl"
        proc = subprocess.run([str(exe), "--engine", str(engine), str(photos), "--max-pixels", "1000000", "-o",
                               str(out)], capture_output=True, text=True, timeout=600, env=dict(os.environ, DER_NO_PROGRESS="1"))
        assert proc.returncode == 0, proc.stderr
        runs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    py, cpp = runs["py"], runs["cpp"]
    assert [r["path"] for r in py] == [r["path"] for r in cpp]
    errors = {r["path"]: r["error"] for r in py if "error" in r}
    assert errors == {r["path"]: r["error"] for r in cpp if "error" in r}
    # 1 MP: the baseline photos (1.8 to 3 MP) pass, counted at their DCT-scaled size; the progressive 3 MP one
    # counts at full size (libjpeg holds all of its coefficients), the progressive 0.8 MP one is under the limit.
    assert sorted(Path(p).name for p in errors) == ["IMG_0002.jpg"], errors
    assert "too large: 1512×2016 > 1000000 pixels; raise --max-pixels" in next(iter(errors.values()))
    for a, b in zip(py, cpp):
        if "scores" in a:
            assert max(abs(a["scores"][c] - b["scores"][c]) for c in a["scores"]) <= 1e-5, a["path"]
    bad = _with_card(tiny_onnx, tmp_path / "bad.onnx", decode="fast")
    for exe in (Path(sys.executable).with_name("der-infer"), der_infer_cpp):
        proc = subprocess.run([str(exe), "--engine", str(bad), str(photos)], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2 and "model card decode 'fast' is unknown; use full or draft" in proc.stderr, proc.stderr


REGRESSIONS = REPO / "tests" / "fuzz_regressions"


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", sorted(p for p in REGRESSIONS.glob("*") if p.suffix != ".md"), ids=lambda p: p.name)
def test_fuzz_regressions_replay(tool: Path, tmp_path: Path, path: Path) -> None:
    """Inputs that once crashed the fuzz harness (scripts/fuzz.sh saves them here): decoded in full and shrunk on
    load, and preprocessed, without a crash, with load_image's status."""
    for draft in (None, (6, 8)):
        want, got = py_decode(path, draft, 1 << 22), cpp_decode(tool, path, tmp_path, draft, 1 << 22)
        status = [v if isinstance(v, str) else "ok" for v in (want, got)]
        assert isinstance(want, str) == isinstance(got, str), f"draft={draft}: python {status[0]}, c++ {status[1]}"
    res = run(tool, "preprocess", path, 24, 32, "bilinear", tmp_path / "t.f32", "--max-pixels", 1 << 22)
    assert res.returncode in (0, 1), f"der_image_tool crashed: rc={res.returncode} {res.stderr[-2000:]}"
