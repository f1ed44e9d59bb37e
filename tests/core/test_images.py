"""Decoding every format to upright RGB, preprocessing vs an independent numpy reference, bad files."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from der_deploy.card import ModelCard
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
