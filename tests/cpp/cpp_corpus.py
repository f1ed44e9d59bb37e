"""Inputs for the C++ vs Python parity tests: photo-like camera JPEGs and a folder of bad and odd files.

There are no real photos offline, so "photos" are generated to have what makes real ones hard: smooth
gradients with texture and noise, shapes with sharp edges, camera sizes, EXIF orientation, progressive and
4:4:4 / 4:2:2 / 4:2:0 JPEGs, PNG.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ORIENTATION = 0x0112


def photo(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.empty((h, w, 3), np.float32)
    for c in range(3):  # sky-like gradients plus low-frequency "texture"
        fx, fy = rng.uniform(0.5, 3.0, 2) * 2 * np.pi
        base[..., c] = (rng.uniform(40, 200) + 50 * np.sin(fx * x / w + c) * np.cos(fy * y / h)
                        + rng.uniform(-60, 60) * (y / h))
    base += rng.normal(0, 6, base.shape)  # sensor noise
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(12):  # objects with sharp edges
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(w // 20, w // 3), y0 + rng.integers(h // 20, h // 3)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return img


def exif(orientation: int) -> bytes:
    ex = Image.Exif()
    ex[ORIENTATION] = orientation
    return ex.tobytes()


def make_photos(root: Path) -> Path:
    out = root / "photos"
    out.mkdir(parents=True)
    photo(2016, 1512, 1).save(out / "IMG_0001.jpg", quality=92, exif=exif(6))  # portrait shot held sideways
    photo(1512, 2016, 2).save(out / "IMG_0002.jpg", quality=95, progressive=True, subsampling=0)  # 4:4:4
    photo(1600, 1200, 3).save(out / "IMG_0003.JPG", quality=85, optimize=True, subsampling=2, exif=exif(3))
    photo(3000, 600, 4).save(out / "pano.jpeg", quality=90, exif=exif(8))
    photo(640, 480, 5).save(out / "small.jpg", quality=75, subsampling=1)  # 4:2:2
    photo(800, 600, 6).save(out / "screenshot.png")
    photo(1024, 768, 7).save(out / "edited.jpg", quality=97, progressive=True, exif=exif(2))  # mirrored
    return out


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def make_bad(root: Path) -> tuple[Path, Path]:
    """A folder of bad and odd inputs; returns (folder, a FIFO outside it to name on the command line)."""
    rng = np.random.default_rng(9)
    out = root / "bad"
    (out / "nested" / "deeper").mkdir(parents=True)
    (out / "dir.jpg").mkdir()  # a folder with an image suffix: walked, never an entry
    (out / ".hidden").mkdir()
    good = photo(320, 240, 11)
    full = _jpeg(good, quality=90)
    (out / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (out / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (out / "empty.png").write_bytes(b"")
    (out / "notes.jpg").write_text("this is not an image\n")
    (out / "rotated.jpg").write_bytes(_jpeg(good, quality=90, exif=exif(5)))
    good.convert("CMYK").save(out / "cmyk.jpg", quality=90)
    g16 = (np.linspace(0, 65535, 90 * 70).reshape(70, 90)).astype(np.uint16)
    Image.fromarray(g16).save(out / "gray16.png")  # mode I;16
    rgba = good.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (240, 320), dtype=np.uint8), "L"))
    rgba.save(out / "rgba.png")
    good.convert("LA").save(out / "gray_alpha.png")
    pal = good.quantize(64)
    pal.info["transparency"] = 3
    pal.save(out / "palette.png", transparency=3)
    good.convert("L").save(out / "gray.jpg", quality=90)
    Image.new("RGB", (1, 1), (200, 30, 90)).save(out / "one.png")
    Image.fromarray(rng.integers(0, 256, (1, 4000, 3), dtype=np.uint8), "RGB").save(out / "wide.png")
    Image.fromarray(rng.integers(0, 256, (2500, 2, 3), dtype=np.uint8), "RGB").save(out / "tall.jpg", quality=90)
    good.save(out / "nested" / "a.bmp")
    good.save(out / "nested" / "b.gif")
    good.save(out / "nested" / "deeper" / "c.webp", quality=80)
    good.save(out / "nested" / "deeper" / "d.tif")
    good.save(out / "nested" / "deeper" / "e.ppm")
    good.save(out / ".hidden" / "ignored.jpg")
    good.save(out / ".dotfile.jpg")
    # Names: not UTF-8 (Latin-1 e-acute), a backslash, valid non-ASCII, upper-case suffix.
    for name in (b"caf\xe9.jpg", b"back\\slash.png", "ünïcödé.jpg".encode(), b"UPPER.JPEG", b"\xff\xfe.png"):
        good.save(os.fsdecode(os.path.join(os.fsencode(out), name)), format="PNG" if name.endswith(b".png") else "JPEG")
    os.symlink("does-not-exist.jpg", out / "dangling.jpg")
    os.symlink("one.png", out / "link.png")
    os.mkfifo(out / "pipe.jpg")  # in a folder: counted as skipped, never opened
    fifo = root / "named-pipe.jpg"  # on the command line: an error record, never opened
    os.mkfifo(fifo)
    return out, fifo


def noninterleaved_jpeg(w: int, h: int) -> bytes:
    """A baseline JPEG with one scan per component (3 scans, Ns = 1 < Nf = 3), flat mid-gray.

    Pillow cannot write one; libjpeg keeps every coefficient of such a file in memory, like a progressive one,
    so shrink-on-load must count it at full size against max_pixels. Every block is DC difference 0 + EOB,
    each coded as the single 1-bit Huffman code "0"."""
    def seg(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0 (DC category 0 / AC EOB)
    blocks = -(-w // 8) * -(-h // 8)
    bits = 2 * blocks
    scan = b"\x00" * (bits // 8) + (bytes([(0xFF >> (bits % 8))]) if bits % 8 else b"")  # pad with 1-bits
    out = b"\xff\xd8" + seg(0xDB, b"\x00" + b"\x01" * 64)
    out += seg(0xC0, bytes([8]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]))
    out += seg(0xC4, b"\x00" + one_code + b"\x10" + one_code)
    for comp in (1, 2, 3):
        out += seg(0xDA, bytes([1, comp, 0x00, 0, 63, 0])) + scan
    return out + b"\xff\xd9"
