"""Decoding every format to upright RGB, preprocessing vs an independent numpy reference, bad files."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import ImageError
from der_deploy.images import (
    IMAGE_EXTENSIONS,
    find_images,
    load_and_preprocess,
    load_image,
    preprocess,
    stack,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def card(h=8, w=8, **kw):
    return ModelCard(classes=["a", "b"], arch="resnet18", input_size=(h, w), **kw)


def reference(rgb: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """(v/255 - mean)/std per channel in float64, HWC -> CHW, no resizing."""
    x = rgb.astype(np.float64) / 255.0
    x = (x - np.array(mean)) / np.array(std)
    return x.transpose(2, 0, 1)


def quadrants(h=40, w=60) -> np.ndarray:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2:] = (0, 255, 0)
    a[h // 2:, : w // 2] = (0, 0, 255)
    a[h // 2:, w // 2:] = 255
    return a


# --- decoding ---------------------------------------------------------------------------------------------

def test_png_rgb_exact(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    assert img.mode == "RGB" and img.size == (17, 13)
    np.testing.assert_array_equal(np.asarray(img), a)


def test_jpeg(tmp_path):
    a = quadrants()
    Image.fromarray(a).save(tmp_path / "x.jpg", quality=95)
    img = load_image(tmp_path / "x.jpg")
    assert img.mode == "RGB" and img.size == (60, 40)
    assert np.abs(np.asarray(img).astype(int) - a).mean() < 6


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(3, axis=0)
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")  # really a 16-bit file
    out = np.asarray(load_image(tmp_path / "g16.png"))
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_grayscale_la_rgba_drop_alpha(tmp_path):
    Image.fromarray(np.full((4, 5), 77, np.uint8)).save(tmp_path / "l.png")
    assert np.asarray(load_image(tmp_path / "l.png")).tolist()[0][0] == [77, 77, 77]
    la = Image.new("LA", (4, 4), (200, 0))
    la.save(tmp_path / "la.png")
    assert np.asarray(load_image(tmp_path / "la.png"))[0, 0].tolist() == [200, 200, 200]
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent: alpha is dropped, colour kept
    rgba.save(tmp_path / "rgba.png")
    img = load_image(tmp_path / "rgba.png")
    assert img.mode == "RGB" and np.asarray(img)[0, 0].tolist() == [10, 20, 30]


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "k.jpg", quality=100)  # pure red ink
    assert Image.open(tmp_path / "k.jpg").mode == "CMYK"
    r, g, b = np.asarray(load_image(tmp_path / "k.jpg"))[8, 8].tolist()
    assert r > 240 and g < 15 and b < 15


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (4, 4), 1)
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.save(tmp_path / "p.png", transparency=0)
    assert Image.open(tmp_path / "p.png").info.get("transparency") == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow palette-transparency warning either
        out = np.asarray(load_image(tmp_path / "p.png"))
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [0, 255, 0]


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_honoured_through_preprocess(tmp_path, orientation):
    stored = quadrants(40, 60)  # stored as 60 wide x 40 high
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.jpg", quality=98, exif=exif.tobytes())
    img = load_image(tmp_path / "o.jpg")
    # Orientation 6 means the viewer must rotate 90 deg clockwise (8: counter-clockwise, 3: 180).
    expected = {1: stored, 3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}[orientation]
    assert img.size == (expected.shape[1], expected.shape[0])
    x = preprocess(img, card(20, 20, interpolation="nearest"))
    want = reference(np.asarray(Image.fromarray(np.ascontiguousarray(expected)).resize((20, 20), Image.NEAREST)))
    # corners (away from block edges and JPEG ringing) carry the orientation
    for (i, j) in [(2, 2), (2, 17), (17, 2), (17, 17)]:
        np.testing.assert_allclose(x[:, i, j], want[:, i, j], atol=0.15)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found") as e:
        load_image(tmp_path / "nope.jpg")
    assert e.value.path == tmp_path / "nope.jpg" and str(tmp_path / "nope.jpg") in str(e.value)


def test_text_file_renamed_jpg(tmp_path):
    f = tmp_path / "notes.jpg"
    f.write_text("this is not an image\n" * 10)
    with pytest.raises(ImageError, match="not an image") as e:
        load_image(f)
    assert str(f) in str(e.value)


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


@pytest.fixture
def good_jpeg(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "good.jpg"
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(path, quality=90)
    return path.read_bytes()


def test_truncated_jpeg(tmp_path, good_jpeg):
    f = tmp_path / "cut.jpg"
    f.write_bytes(good_jpeg[: len(good_jpeg) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt") as e:
        load_image(f)
    assert e.value.path == f
    assert Image.MAX_IMAGE_PIXELS is not None  # the bomb guard is on
    from PIL import ImageFile
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("where", ["after_scan_header", "in_tables"])
def test_corrupt_jpeg(tmp_path, good_jpeg, where):
    rng = np.random.default_rng(2)
    garbage = rng.integers(0, 255, 6000, dtype=np.uint8).tobytes().replace(b"\xff", b"\x17")
    cut = good_jpeg.find(b"\xff\xda") + 20 if where == "after_scan_header" else 200
    f = tmp_path / "bad.jpg"
    f.write_bytes(good_jpeg[:cut] + garbage)
    with pytest.raises(ImageError, match="corrupt") as e:
        load_image(f)
    assert str(f) in str(e.value)


def test_trailing_bytes_after_jpeg_end_are_fine(tmp_path, good_jpeg):
    f = tmp_path / "trail.jpg"
    f.write_bytes(good_jpeg + b"\x00" * 100)
    assert load_image(f).size == (128, 96)


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(tmp_path / "cut.png")


def test_decompression_bomb(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # > 2x the limit -> refused
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "big.png")


# --- preprocessing ----------------------------------------------------------------------------------------

def test_preprocess_matches_reference_without_resize():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    x = preprocess(Image.fromarray(a), card(12, 10))
    assert x.shape == (3, 12, 10) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x, reference(a), rtol=0, atol=2e-6)
    # one pixel by hand
    v = a[5, 7, 1]
    assert x[1, 5, 7] == pytest.approx((v / 255 - MEAN[1]) / STD[1], abs=2e-6)


def test_preprocess_custom_mean_std_and_bgr():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    mean, std = (0.5, 0.25, 0.1), (0.5, 0.2, 0.3)
    rgb = preprocess(Image.fromarray(a), card(6, 9, mean=mean, std=std))
    bgr = preprocess(Image.fromarray(a), card(6, 9, mean=mean, std=std, channel_order="BGR"))
    np.testing.assert_allclose(rgb, reference(a, mean, std), atol=2e-6)
    np.testing.assert_array_equal(bgr, rgb[::-1])  # mean/std stay attached to their colour
    assert bgr.flags.c_contiguous


@pytest.mark.parametrize("interp", ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"])
def test_resize_straight_to_hw_with_card_interpolation(interp):
    rng = np.random.default_rng(6)
    a = rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)
    c = card(24, 16, interpolation=interp)  # H=24, W=16: aspect ratio not kept, no crop
    x = preprocess(Image.fromarray(a), c)
    assert x.shape == (3, 24, 16)
    resample = getattr(Image.Resampling, interp.upper())
    want = reference(np.asarray(Image.fromarray(a).resize((16, 24), resample)))
    np.testing.assert_allclose(x, want, atol=2e-6)


def test_interpolation_changes_result():
    rng = np.random.default_rng(7)
    img = Image.fromarray(rng.integers(0, 256, (50, 80, 3), dtype=np.uint8))
    near = preprocess(img, card(20, 30, interpolation="nearest"))
    bil = preprocess(img, card(20, 30, interpolation="bilinear"))
    assert np.abs(near - bil).max() > 0.5


def test_preprocess_converts_non_rgb_and_rejects_non_images():
    x = preprocess(Image.new("L", (5, 5), 255), card(5, 5))
    np.testing.assert_allclose(x[:, 0, 0], (1 - np.array(MEAN)) / np.array(STD), atol=2e-6)
    with pytest.raises(ValueError, match="PIL image"):
        preprocess(np.zeros((5, 5, 3)), card(5, 5))


def test_load_and_preprocess_and_stack(tmp_path):
    rng = np.random.default_rng(8)
    arrays = []
    for i in range(3):
        a = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        arrays.append(a)
    c = card(9, 11)
    xs = [load_and_preprocess(tmp_path / f"{i}.png", c) for i in range(3)]
    batch = stack(xs)
    assert batch.shape == (3, 3, 9, 11) and batch.dtype == np.float32 and batch.flags.c_contiguous
    for i in range(3):
        np.testing.assert_allclose(batch[i], reference(arrays[i]), atol=2e-6)
    assert stack([x.astype(np.float64) for x in xs]).dtype == np.float32
    with pytest.raises(ValueError, match="empty"):
        stack([])
    with pytest.raises(ValueError, match="different shapes"):
        stack([xs[0], np.zeros((3, 9, 10), np.float32)])
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        stack([np.zeros((9, 11))])
    with pytest.raises(ImageError):
        load_and_preprocess(tmp_path / "missing.png", c)


# --- discovery --------------------------------------------------------------------------------------------

def test_find_images(tmp_path):
    for rel in ["b/2.JPG", "b/1.png", "a.jpeg", "c/d/e.webp", "notes.txt", ".hidden.jpg", ".cache/x.png",
                "c/readme.md"]:
        p = tmp_path / "root" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    odd = tmp_path / "photo.data"
    odd.write_bytes(b"x")
    root = tmp_path / "root"
    found = find_images([odd, root, root / "a.jpeg"])
    assert found == [odd, root / "a.jpeg", root / "b/1.png", root / "b/2.JPG", root / "c/d/e.webp"]
    assert find_images(root) == found[1:]
    assert find_images(str(odd)) == [odd]
    assert ".jpg" in IMAGE_EXTENSIONS and ".png" in IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    with pytest.raises(ImageError, match="no such file") as e:
        find_images([root, tmp_path / "missing"])
    assert e.value.path == tmp_path / "missing"
    assert find_images(tmp_path / "root" / "c" / "d") == [root / "c/d/e.webp"]
    os.mkdir(tmp_path / "empty")
    assert find_images(tmp_path / "empty") == []


def test_scan_images_counts_what_it_skips_in_folders(tmp_path):
    import socket

    from der_deploy.images import scan_images

    root = tmp_path / "r"
    for rel in ["a.png", "sub/b.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    os.symlink(root / "missing.jpg", root / "dangling.jpg")
    os.symlink(root / "a.png", root / "link.png")  # a link to a regular file is an image like any other
    os.symlink(root / "sub", root / "linkdir")  # symlinked folders are not walked (pathlib's rglob rule)
    os.mkfifo(root / "sub" / "pipe.jpg")
    os.mkfifo(root / "pipe.txt")  # no image suffix: never a candidate, not counted
    os.mkfifo(root / ".hidden.png")  # hidden: not counted
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "s.webp"))
        scan = scan_images([root])
    finally:
        sock.close()
    assert scan.files == [root / "a.png", root / "link.png", root / "sub/b.jpg"]
    assert scan.skipped == {"dangling symlink": 1, "FIFO": 1, "socket": 1} and scan.skipped_total == 3
    assert scan.describe_skipped() == "skipped in folders: 1 dangling symlink, 1 FIFO, 1 socket"
    assert find_images(root) == scan.files


def test_load_image_refuses_a_fifo_without_opening_it(tmp_path):
    import threading

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    result = {}

    def load():
        try:
            load_image(fifo)
        except ImageError as err:
            result["err"] = err

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # it opened the FIFO and blocks: release it, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail("load_image opened the FIFO and blocked")
    assert str(result["err"]) == f"{fifo}: not a regular file (a FIFO); name an image file"
    with pytest.raises(ImageError, match="not a regular file \\(a character device\\)"):
        load_image("/dev/null")


# --- shrink-on-load (draft) and max_pixels ------------------------------------------------------------------

def _jpeg_bytes(arr: np.ndarray, mode: str = "RGB", **kw) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, "JPEG", **kw)
    return buf.getvalue()


def _noisy(h, w, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("target,expected", [((448, 448), (1000, 750)), ((370, 480), (500, 375)), ((1, 1), (500, 375)),
                                             ((1400, 1900), (2000, 1500)), ((1600, 2100), (4000, 3000))])
def test_draft_takes_the_smallest_dct_scale_that_covers_the_target(mode, target, expected):
    """Pillow's rule: the largest of 1/8, 1/4, 1/2 with min(W // w, H // h) >= the denominator."""
    from der_deploy.images import decode_image

    data = _jpeg_bytes(_noisy(3000, 4000), mode, quality=70)
    img = decode_image(data, "x.jpg", draft=target)
    assert img.mode == "RGB" and img.size == expected
    ref = Image.open(__import__("io").BytesIO(data))
    ref.draft("RGB", (target[1], target[0]))
    assert np.array_equal(np.asarray(img), np.asarray(ref.convert("RGB")))


def test_draft_swaps_the_target_for_a_sideways_photo():
    """Stored 4000x3000 with orientation 6 is an upright 3000x4000 portrait: for a portrait 448 (H) x 224 (W)
    target 1/8 covers it (375 x 500 upright); a landscape 224 x 448 target needs 1/4 (375 < 448 upright width)."""
    from der_deploy.images import decode_image

    exif = Image.Exif()
    exif[0x0112] = 6
    data = _jpeg_bytes(_noisy(3000, 4000), quality=70, exif=exif.tobytes())
    assert decode_image(data, "x", draft=(448, 224)).size == (375, 500)  # upright (W, H)
    assert decode_image(data, "x", draft=(224, 448)).size == (750, 1000)


def test_draft_leaves_other_formats_and_small_images_alone(tmp_path):
    from der_deploy.images import decode_image

    a = _noisy(300, 400)
    Image.fromarray(a).save(tmp_path / "x.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "x.png", draft=(10, 10))), a)
    data = _jpeg_bytes(a, quality=90)
    assert np.array_equal(np.asarray(decode_image(data, "x", draft=(200, 200))), np.asarray(decode_image(data, "x")))


def test_draft_card_round_trip_and_load_and_preprocess(tmp_path):
    from der_deploy.errors import CardError
    from der_deploy.images import decode_target

    c = card(64, 48, decode="draft")
    assert c.to_dict()["decode"] == "draft" and ModelCard.from_json(c.to_json()).decode == "draft"
    full = card(64, 48)
    assert "decode" not in full.to_dict() and full.decode == "full"  # old readers keep reading full cards
    assert decode_target(c) == (64, 48) and decode_target(full) is None
    with pytest.raises(CardError, match="model card decode 'fast' is unknown; use full or draft"):
        ModelCard.from_dict({**full.to_dict(), "decode": "fast"})
    (tmp_path / "x.jpg").write_bytes(_jpeg_bytes(_noisy(600, 800), quality=80))
    got = load_and_preprocess(tmp_path / "x.jpg", c)
    want = preprocess(load_image(tmp_path / "x.jpg", draft=(64, 48)), c)
    assert np.array_equal(got, want) and not np.array_equal(got, load_and_preprocess(tmp_path / "x.jpg", full))


def test_max_pixels_refuses_from_the_header_before_decoding(tmp_path):
    """A PNG header claiming 9000x9000 with no pixel data: "too large", not "truncated" (nothing was decoded)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0))
    (tmp_path / "big.png").write_bytes(head + chunk(b"IDAT", b"\x78\x9c") + chunk(b"IEND", b""))
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "big.png", max_pixels=40_000_000)
    assert str(err.value) == f"{tmp_path / 'big.png'}: too large: 9000×9000 > 40000000 pixels; raise --max-pixels"
    with pytest.raises(ImageError, match="truncated or corrupt"):  # no limit: it is decoded, and is truncated
        load_image(tmp_path / "big.png")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(tmp_path / "big.png", max_pixels=0)  # 0: no limit


def test_max_pixels_counts_the_decoded_size_of_a_draft_jpeg():
    """A baseline JPEG counts at its DCT-scaled size; a progressive one at full size (libjpeg holds every
    coefficient of the full image whatever the scale)."""
    from der_deploy.images import decode_image

    a = _noisy(1200, 1600)
    baseline, progressive = _jpeg_bytes(a, quality=70), _jpeg_bytes(a, quality=70, progressive=True)
    assert decode_image(baseline, "b", draft=(100, 100), max_pixels=100_000).size == (200, 150)
    with pytest.raises(ImageError, match=r"^b: too large: 1600×1200 > 100000 pixels"):
        decode_image(baseline, "b", max_pixels=100_000)
    with pytest.raises(ImageError, match=r"^p: too large: 1600×1200 > 100000 pixels; raise --max-pixels$"):
        decode_image(progressive, "p", draft=(100, 100), max_pixels=100_000)
    with pytest.raises(ImageError, match=r"too large: 200×150 \(1/8 of 1600×1200\) > 1000 pixels"):
        decode_image(baseline, "b", draft=(100, 100), max_pixels=1000)


def test_max_pixels_default_is_the_documented_service_limit():
    from der_deploy.images import DEFAULT_MAX_PIXELS

    assert DEFAULT_MAX_PIXELS == 40_000_000 < Image.MAX_IMAGE_PIXELS  # below Pillow's bomb warning (89.5 MP)
