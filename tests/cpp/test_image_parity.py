"""The C++ SDK's image layer (runtime/cpp/src/image) against Pillow and der_deploy.images, byte for byte.

Drives the `der_image_tool` test executable (built by `make cpp` into build/cpp/tests/, or the path in
$DER_IMAGE_TOOL) on a corpus generated here: resize must equal Pillow's Image.resize exactly for every filter,
decoding must give load_image's pixels and error status for every file, and decode + preprocess must give
load_and_preprocess's tensor to 1e-6 -- each also with shrink-on-load (draft) and with a max_pixels limit.
"""
from __future__ import annotations

import io
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import ImageError
from der_deploy.images import load_and_preprocess, load_image

from cpp_corpus import make_photos, noninterleaved_jpeg

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
    return ([] if draft is None else ["--draft", draft[1], draft[0]]) + ([] if max_pixels is None else ["--max-pixels", max_pixels])


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

def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    chans = [127.5 + 127.5 * np.sin(x / max(w, 1) * 7 + y / max(h, 1) * 5 + p) for p in phase]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


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

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


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
    photo = np.clip(_smooth(120, 160, 1).astype(int) + _noise(120, 160, 2) // 8 - 16, 0, 255).astype(np.uint8)
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
    save("odd_size.jpg", Image.fromarray(_smooth(37, 53, 3), "RGB"), quality=90)
    save("tiny.jpg", Image.fromarray(_noise(1, 1, 4), "RGB"))
    save("wide.jpg", Image.fromarray(_smooth(2, 900, 5), "RGB"))
    save("gray.jpg", rgb.convert("L"), quality=90)
    save("cmyk.jpg", rgb.convert("CMYK"), quality=90)
    for o in range(1, 9):
        save(f"exif{o}.jpg", Image.fromarray(_smooth(30, 50, o), "RGB"), quality=92, exif=_exif_bytes(o))
    for name, typ, value in (("exif_rational6.jpg", 5, struct.pack("<II", 12, 2)), ("exif_float8.jpg", 11, struct.pack("<f", 8.0)),
                             ("exif_double5.jpg", 12, struct.pack("<d", 5.0)), ("exif_srational7.jpg", 10, struct.pack("<ii", -7, -1)),
                             ("exif_rational_nan.jpg", 5, struct.pack("<II", 6, 0))):
        save(name, Image.fromarray(_smooth(30, 50, typ), "RGB"), quality=92, exif=_exif_typed(typ, value))
    # PNG
    rgba = np.dstack([photo, _noise(120, 160, 6)[..., 0]])
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
    i16 = (_smooth(40, 60, 7)[..., 0].astype(np.uint32) * 257 + _noise(40, 60, 7)[..., 0]).clip(0, 65535)
    save("i16.png", Image.fromarray(i16.astype(np.uint16)))  # mode I;16
    deep = (_smooth(33, 47, 8).astype(np.uint16) * 257 + _noise(33, 47, 9).astype(np.uint16))
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
    save("wide.png", Image.fromarray(_noise(1, 4000, 2), "RGB"))
    save("tall.jpg", Image.fromarray(_smooth(4000, 1, 2), "RGB"))
    frames = [Image.fromarray(_noise(10, 12, s), "RGB") for s in range(3)]
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
              "bomb.jpg", "bomb.gif"]


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
        proc = subprocess.run([str(exe), "--engine", str(engine), str(photos), "--max-pixels", "1000000", "-o", str(out)],
                              capture_output=True, text=True, timeout=600, env=dict(os.environ, DER_NO_PROGRESS="1"))
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
        proc = subprocess.run([str(exe), "--engine", str(bad), str(photos)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "model card decode 'fast' is unknown; use full or draft" in proc.stderr, proc.stderr


REGRESSIONS = REPO / "tests" / "fuzz_regressions"


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", sorted(p for p in REGRESSIONS.glob("*") if p.suffix != ".md"), ids=lambda p: p.name)
def test_fuzz_regressions_replay(tool: Path, tmp_path: Path, path: Path) -> None:
    """Inputs that once crashed the fuzz harness (scripts/fuzz.sh saves them here): decoded in full and shrunk on
    load, and preprocessed, without a crash, with load_image's status."""
    for draft in (None, (6, 8)):
        want, got = py_decode(path, draft, 1 << 22), cpp_decode(tool, path, tmp_path, draft, 1 << 22)
        assert isinstance(want, str) == isinstance(got, str), f"python {want if isinstance(want, str) else 'ok'}, c++ {got if isinstance(got, str) else 'ok'}"
    res = run(tool, "preprocess", path, 24, 32, "bilinear", tmp_path / "t.f32", "--max-pixels", 1 << 22)
    assert res.returncode in (0, 1), f"der_image_tool crashed: rc={res.returncode} {res.stderr[-2000:]}"
