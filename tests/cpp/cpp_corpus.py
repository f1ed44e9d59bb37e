"""Inputs for the C++ vs Python parity tests: the image-layer corpus (every format and layout, EXIF variants, damage
Pillow tolerates, bad inputs; also the fuzzer's seeds), photo-like camera JPEGs and a folder of bad and odd files.

There are no real photos offline, so "photos" are generated to have what makes real ones hard: smooth
gradients with texture and noise, shapes with sharp edges, camera sizes, EXIF orientation, progressive and
4:4:4 / 4:2:2 / 4:2:0 JPEGs, PNG.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
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
    frame = bytes([8]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0])
    out += seg(0xC0, frame)
    out += seg(0xC4, b"\x00" + one_code + b"\x10" + one_code)
    for comp in (1, 2, 3):
        out += seg(0xDA, bytes([1, comp, 0x00, 0, 63, 0])) + scan
    return out + b"\xff\xd9"


# ------------------------------------------------------------- the image-layer corpus (test_image_parity.py)

def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth(h: int, w: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    chans = [127.5 + 127.5 * np.sin(x / max(w, 1) * 7 + y / max(h, 1) * 5 + p) for p in phase]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _deflated(n: int) -> bytes:
    """zlib data inflating to n bytes of "a" (about n / 1000 bytes)."""
    comp = zlib.compressobj(9)
    whole = b"".join(comp.compress(b"a" * (1 << 20)) for _ in range(n >> 20))
    return whole + comp.compress(b"a" * (n & 0xFFFFF)) + comp.flush()


def write_png(path: Path, arr: np.ndarray, color_type: int, interlace: bool = False, extra: bytes = b"") -> None:
    """A minimal PNG writer for what Pillow cannot save: 16-bit colour, 16-bit gray+alpha, Adam7 interlacing.
    ``arr`` is (H, W, C) uint8 or big-endian-able uint16."""
    h, w = arr.shape[:2]
    depth = 16 if arr.dtype == np.uint16 else 8
    data = arr.astype(">u2" if depth == 16 else np.uint8)

    def rows(img: np.ndarray) -> bytes:
        return b"".join(b"\x00" + img[y].tobytes() for y in range(img.shape[0])) if img.size else b""

    if interlace:
        raw = b"".join(rows(data[y0::dy, x0::dx]) for x0, y0, dx, dy in _ADAM7)
    else:
        raw = rows(data)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra
                     + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def write_bmp(path: Path, arr: np.ndarray, bits: int, masks: tuple[int, ...] = (), top_down: bool = False,
              os2: bool = False) -> None:
    """BMP layouts Pillow does not write: 16-bit 565/555, bit fields, top-down rows, the OS/2 12-byte header."""
    h, w, _ = arr.shape
    a = arr.astype(np.uint32)
    if bits == 16:
        if masks == (0xF800, 0x7E0, 0x1F):
            px = (a[..., 0] >> 3 << 11) | (a[..., 1] >> 2 << 5) | (a[..., 2] >> 3)
        else:
            px = (a[..., 0] >> 3 << 10) | (a[..., 1] >> 3 << 5) | (a[..., 2] >> 3)
        raw = px.astype("<u2").tobytes()
        rows = [raw[y * w * 2:(y + 1) * w * 2] for y in range(h)]
    else:
        rows = [arr[y, :, ::-1].tobytes() for y in range(h)]  # BGR
    stride = (w * bits + 31) // 32 * 4
    body = b"".join(r.ljust(stride, b"\0") for r in (rows if top_down else rows[::-1]))
    if os2:
        info = struct.pack("<IHHHH", 12, w, h, 1, bits)
    else:
        info = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, bits, 3 if masks else 0, len(body),
                           2835, 2835, 0, 0) + b"".join(struct.pack("<I", m) for m in masks)
    offset = 14 + len(info)
    path.write_bytes(b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + body)


def _exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _exif_typed(typ: int, value: bytes) -> bytes:
    """EXIF whose orientation has TIFF type ``typ`` (5 rational, 10 signed rational, 11 float, 12 double): Pillow's
    exif_transpose acts on 6/1 or 8.0 as on 6 or 8, since it looks the value up in a dict."""
    inline = len(value) <= 4
    ifd = struct.pack("<HHHI", 1, 0x0112, typ, 1) + (value.ljust(4, b"\0") if inline else struct.pack("<I", 26))
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + (b"" if inline else value)


def build_corpus(root: Path) -> dict[str, Path]:
    """Files for decode parity, name -> path. Photos are smooth + noise so JPEG's lossy paths are exercised."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    photo = np.clip(smooth(120, 160, 1).astype(int) + noise(120, 160, 2) // 8 - 16, 0, 255).astype(np.uint8)
    rgb = Image.fromarray(photo, "RGB")

    def save(name: str, img: Image.Image, **kw) -> None:
        files[name] = root / name
        img.save(files[name], **kw)

    # JPEG
    for q in (40, 75, 95):
        save(f"q{q}.jpg", rgb, quality=q)
    for sub in (0, 1, 2):
        save(f"sub{sub}.jpg", rgb, quality=90, subsampling=sub)
    save("progressive.jpg", rgb, quality=85, progressive=True)
    save("odd_size.jpg", Image.fromarray(smooth(37, 53, 3), "RGB"), quality=90)
    save("tiny.jpg", Image.fromarray(noise(1, 1, 4), "RGB"))
    save("wide.jpg", Image.fromarray(smooth(2, 900, 5), "RGB"))
    save("gray.jpg", rgb.convert("L"), quality=90)
    save("cmyk.jpg", rgb.convert("CMYK"), quality=90)
    for o in range(1, 9):
        save(f"exif{o}.jpg", Image.fromarray(smooth(30, 50, o), "RGB"), quality=92, exif=_exif_bytes(o))
    for name, typ, value in (("exif_rational6.jpg", 5, struct.pack("<II", 12, 2)),
                             ("exif_float8.jpg", 11, struct.pack("<f", 8.0)),
                             ("exif_double5.jpg", 12, struct.pack("<d", 5.0)),
                             ("exif_srational7.jpg", 10, struct.pack("<ii", -7, -1)),
                             ("exif_rational_nan.jpg", 5, struct.pack("<II", 6, 0))):
        save(name, Image.fromarray(smooth(30, 50, typ), "RGB"), quality=92, exif=_exif_typed(typ, value))
    # PNG
    rgba = np.dstack([photo, noise(120, 160, 6)[..., 0]])
    save("rgb.png", rgb)
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("la.png", Image.fromarray(rgba[..., [0, 3]], "LA"))
    save("l.png", rgb.convert("L"))
    save("one_bit.png", rgb.convert("1"))
    pal = rgb.quantize(colors=50)
    save("p.png", pal)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 3
    save("p_trns.png", pal_t, transparency=3)
    save("p_alpha.png", pal, transparency=bytes(range(0, 250, 5)))
    save("p4.png", rgb.quantize(colors=12), bits=4)
    save("exif6.png", rgb, exif=_exif_bytes(6))
    exif3 = _exif_bytes(3)
    raw_profile = f"\nexif\n{len(exif3):8}\n{exif3.hex()}\n".encode()
    files["raw_profile_exif.png"] = root / "raw_profile_exif.png"  # EXIF as ImageMagick writes it in PNG text
    write_png(files["raw_profile_exif.png"], photo[:20, :30], 2,
              extra=_png_chunk(b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(raw_profile)))
    files["xmp8.png"] = root / "xmp8.png"
    write_png(files["xmp8.png"], photo[:20, :30], 2, extra=_png_chunk(
        b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + b'<rdf:Description tiff:Orientation="8"/>'))
    files["bad_exif.jpg"] = root / "bad_exif.jpg"  # unreadable EXIF that Pillow ignores (no JFIF DPI)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", exif=_exif_bytes(3))
    data = buf.getvalue()
    files["bad_exif.jpg"].write_bytes(data[:2] + b"\xff\xe1\x00\x10Exif\x00\x00NOTATIFF" + data[2:])
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    save("xmp6.jpg", rgb, xmp=xmp)
    save("xmp_and_exif.jpg", rgb, xmp=xmp, exif=_exif_bytes(1))
    i16 = (smooth(40, 60, 7)[..., 0].astype(np.uint32) * 257 + noise(40, 60, 7)[..., 0]).clip(0, 65535)
    save("i16.png", Image.fromarray(i16.astype(np.uint16)))  # mode I;16
    deep = (smooth(33, 47, 8).astype(np.uint16) * 257 + noise(33, 47, 9).astype(np.uint16))
    for name, arr, ct, il in [("rgb16.png", deep, 2, False), ("rgba16.png", np.dstack([deep, deep[..., :1]]), 6, False),
                              ("la16.png", deep[..., :2], 4, False), ("gray16_il.png", deep[..., :1], 0, True),
                              ("rgb_interlaced.png", photo, 2, True), ("rgba_interlaced.png", rgba[:17, :23], 6, True)]:
        files[name] = root / name
        write_png(files[name], arr, ct, interlace=il)
    # Other formats the C++ SDK decodes
    small = Image.fromarray(photo[:45, :61], "RGB")
    save("rgb.bmp", small)
    save("l.bmp", small.convert("L"))
    save("p.bmp", small.quantize(colors=20))
    save("one_bit.bmp", small.convert("1"))
    save("rgba.bmp", Image.fromarray(rgba[:45, :61], "RGBA"))
    for name, kw in (("rgb565.bmp", dict(bits=16, masks=(0xF800, 0x7E0, 0x1F))),
                     ("rgb555.bmp", dict(bits=16, masks=(0x7C00, 0x3E0, 0x1F))),
                     ("rgb555_raw.bmp", dict(bits=16)), ("top_down.bmp", dict(bits=24, top_down=True)),
                     ("os2.bmp", dict(bits=24, os2=True))):
        files[name] = root / name
        write_bmp(files[name], photo[:21, :27], **kw)
    save("p.gif", small.quantize(colors=64))
    save("p_trns.gif", small.quantize(colors=64), transparency=5)
    save("not_interlaced.gif", small.quantize(colors=16), interlace=False)
    save("lossy.webp", small, quality=80)
    save("lossless.webp", small, lossless=True)
    save("alpha.webp", Image.fromarray(rgba[:45, :61], "RGBA"), quality=70)
    save("exif8.webp", small, quality=90, exif=_exif_bytes(8))
    save("raw.tif", small)
    save("lzw.tif", small, compression="tiff_lzw")
    save("deflate_gray.tif", small.convert("L"), compression="tiff_adobe_deflate")
    save("rgba.tif", Image.fromarray(rgba[:45, :61], "RGBA"))
    save("one_bit.tif", small.convert("1"))
    save("p.tif", small.quantize(colors=30))
    save("i16.tif", Image.fromarray(i16.astype(np.uint16)))
    save("orient6.tif", small, tiffinfo={274: 6})
    save("rgb.ppm", small)
    save("l.pgm", small.convert("L"))
    save("one_bit.pbm", small.convert("1"))
    save("g16.pgm", Image.fromarray(i16.astype(np.uint16)))
    save("cmyk.tif", small.convert("CMYK"))
    save("jpeg.tif", Image.fromarray(photo[:48, :64], "RGB"), compression="jpeg")
    save("prog_gray.jpg", small.convert("L"), progressive=True)
    save("wide.png", Image.fromarray(noise(1, 4000, 2), "RGB"))
    save("tall.jpg", Image.fromarray(smooth(4000, 1, 2), "RGB"))
    frames = [Image.fromarray(noise(10, 12, s), "RGB") for s in range(3)]
    save("anim.gif", frames[0].quantize(colors=16), save_all=True, append_images=[f.quantize(colors=16) for f in frames[1:]])
    save("anim.webp", frames[0], save_all=True, append_images=frames[1:])
    save("anim.png", frames[0], save_all=True, append_images=frames[1:])
    # A first GIF frame smaller than the logical screen: the rest is the transparent (or first) palette colour.
    for name, kw in (("partial.gif", {}), ("partial_trns.gif", {"transparency": 3})):
        buf = io.BytesIO()
        frames[0].quantize(colors=16).save(buf, format="GIF", **kw)
        data = bytearray(buf.getvalue())
        data[6:10] = struct.pack("<HH", 20, 16)
        files[name] = root / name
        files[name].write_bytes(bytes(data))
    # PNG text chunks within Pillow's limits (MAX_TEXT_CHUNK: exactly 1 MiB inflated), or ones it ignores.
    for name, chunk in (("ztxt_1mib.png", _png_chunk(b"zTXt", b"Comment\0\0" + _deflated(1 << 20))),
                        ("itxt_method.png", _png_chunk(b"iTXt", b"k\0\1\5\0\0" + _deflated(2 << 20))),
                        ("ztxt_corrupt.png", _png_chunk(b"zTXt", b"Comment\0\0\x78\x9cgarbage")),
                        ("itxt_bad_utf8.png", _png_chunk(b"iTXt", b"k\0\0\0\0\0\xff\xfe"))):
        files[name] = root / name
        write_png(files[name], photo[:8, :8], 2, extra=chunk)
    # Damage Pillow tolerates: trailing bytes, no IEND, a bad IDAT CRC, garbage inside JPEG entropy data,
    # palette indices past a short PLTE.
    png, jpg = files["rgb.png"].read_bytes(), files["q75.jpg"].read_bytes()
    idat = png.find(b"IDAT")
    end = idat + 4 + struct.unpack(">I", png[idat - 4:idat])[0]
    corrupt = bytearray(jpg)
    for k in range(len(corrupt) // 2, len(corrupt) // 2 + 40):
        corrupt[k] = (corrupt[k] * 7 + 3) & 0xFF
    rows = b"".join(b"\x00" + bytes((x + y) % 6 for x in range(8)) for y in range(4))
    short_plte = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 4, 8, 3, 0, 0, 0))
                  + _png_chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0])) + _png_chunk(b"IDAT", zlib.compress(rows))
                  + _png_chunk(b"IEND", b""))
    for name, data in (("trailing.png", png + b"garbage" * 10), ("no_iend.png", png[:-12]),
                       ("bad_idat_crc.png", png[:end] + b"\0\0\0\0" + png[end + 4:]),
                       ("trailing.jpg", jpg + b"garbage" * 10), ("corrupt_entropy.jpg", bytes(corrupt)),
                       ("short_plte.png", short_plte)):
        files[name] = root / name
        files[name].write_bytes(data)
    return files


BAD_INPUTS = ["empty.jpg", "text.png", "truncated.jpg", "truncated.png", "garbage_after_header.png",
              "garbage_after_header.jpg", "no_eoi.jpg", "a_folder.jpg", "missing.png", "fifo.jpg", "truncated.gif",
              "truncated.webp", "truncated.bmp", "truncated.tif", "bad_exif_dpi.jpg", "bad_exif.png", "bad_text_crc.png", "bomb.png",
              "bomb.jpg", "bomb.gif", "ztxt_over_1mib.png", "ztxt_bomb.png", "itxt_bomb.png", "iccp_bomb.png",
              "ztxt_method.png", "text_memory.png"]


def build_bad_inputs(root: Path, good: dict[str, Path]) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    jpg, png = good["q75.jpg"].read_bytes(), good["rgb.png"].read_bytes()
    buf = io.BytesIO()
    Image.open(good["q75.jpg"]).save(buf, format="JPEG", dpi=(300, 300))
    jpg_dpi = buf.getvalue()
    content = {
        "empty.jpg": b"",
        "text.png": b"this is not an image\n" * 20,
        "truncated.jpg": jpg[: len(jpg) // 2],
        "truncated.png": png[: len(png) // 2],
        "garbage_after_header.png": png[:33] + bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)),
        "garbage_after_header.jpg": jpg[:200] + bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8)),
        "no_eoi.jpg": jpg[:-2],
        # EXIF that is not TIFF-structured: fatal in load_image for a PNG, and for a JPEG whose JFIF header
        # gives a DPI (otherwise Pillow swallows it while opening; bad_exif.jpg in the good corpus)
        "bad_exif_dpi.jpg": jpg_dpi[:20] + b"\xff\xe1\x00\x10Exif\x00\x00NOTATIFF" + jpg_dpi[20:],
        "bad_exif.png": png[:33] + _png_chunk(b"eXIf", b"NOTATIFF") + png[33:],
        "bad_text_crc.png": png[:33] + _png_chunk(b"tEXt", b"k\0v")[:-4] + b"\0\0\0\0" + png[33:],
    }
    # Decompression bombs: headers claiming more than 2 * Image.MAX_IMAGE_PIXELS (refused before decoding).
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    content["bomb.png"] = png[:8] + _png_chunk(b"IHDR", ihdr) + png[33:]
    sof = jpg.find(b"\xff\xc0")
    content["bomb.jpg"] = jpg[: sof + 5] + struct.pack(">HH", 60000, 60000) + jpg[sof + 9:]
    gif = good["p.gif"].read_bytes()
    content["bomb.gif"] = gif[:6] + struct.pack("<HH", 30000, 30000) + gif[10:]
    # PNG "text bombs": Pillow refuses a zTXt/iTXt/iCCP chunk inflating beyond 1 MiB, or 64 MiB of text in all.
    for name, chunks in (("ztxt_over_1mib.png", [(b"zTXt", b"Comment\0\0" + _deflated((1 << 20) + 1))]),
                         ("ztxt_bomb.png", [(b"zTXt", b"Comment\0\0" + _deflated(64 << 20))]),
                         ("itxt_bomb.png", [(b"iTXt", b"XML:com.adobe.xmp\0\1\0\0\0" + _deflated(2 << 20))]),
                         ("iccp_bomb.png", [(b"iCCP", b"icc\0\0" + _deflated(2 << 20))]),
                         ("ztxt_method.png", [(b"zTXt", b"Comment\0\1" + _deflated(10))]),
                         ("text_memory.png", [(b"zTXt", b"C%d\0\0" % i + _deflated(1 << 20)) for i in range(65)])):
        content[name] = png[:33] + b"".join(_png_chunk(kind, body) for kind, body in chunks) + png[33:]
    for name in ("p.gif", "lossy.webp", "rgb.bmp", "lzw.tif"):
        data = good[name].read_bytes()
        content["truncated." + name.split(".")[1]] = data[: len(data) * 2 // 3]
    files = {}
    for name, data in content.items():
        files[name] = root / name
        files[name].write_bytes(data)
    files["a_folder.jpg"] = root / "a_folder.jpg"
    files["a_folder.jpg"].mkdir()
    files["missing.png"] = root / "missing.png"
    files["fifo.jpg"] = root / "fifo.jpg"
    os.mkfifo(files["fifo.jpg"])  # must be refused without opening (opening would block)
    return files
