"""Seed corpus for fuzz_decode (scripts/fuzz.sh): `python seeds.py OUT_DIR`.

The project's own parity corpora (tests/cpp/cpp_corpus.py build_corpus: every format and layout the C++ image layer
decodes, EXIF/XMP variants, damaged and bomb-sized files) plus odd headers aimed at the hand-written parsers
(BMP, GIF, PNM, EXIF): extreme sizes, rational orientations, a non-interleaved JPEG. Small files only: the
fuzzer's speed falls with input size.
"""
from __future__ import annotations

import hashlib
import io
import struct
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "cpp"))

MAX_SEED = 64 * 1024


def _odd_headers(good: dict[str, Path]) -> dict[str, bytes]:
    from cpp_corpus import exif, noninterleaved_jpeg
    from PIL import Image

    out: dict[str, bytes] = {}
    bmp = good["rgb.bmp"].read_bytes()
    for w, h in ((0xFFFFFFFF, 0xFFFFFFFF), (0, 5), (1, 0x7FFFFFFF), (0x10000, 0x10000)):
        out[f"bmp_{w}x{h}.bmp"] = bmp[:18] + struct.pack("<II", w, h) + bmp[26:]
    gif = good["p.gif"].read_bytes()
    out["gif_65535.gif"] = gif[:6] + struct.pack("<HH", 65535, 65535) + gif[10:]
    out["gif_zero.gif"] = gif[:6] + struct.pack("<HH", 0, 0) + gif[10:]
    for name, head in (("pnm_huge.ppm", b"P6\n99999999999 99999999999\n255\n"), ("pnm_zero.pgm", b"P5\n0 7\n255\n"),
                       ("pnm_16.ppm", b"P6\n2 2\n65535\n" + bytes(24)), ("pnm_comment.pbm", b"P4\n# c\n8 2\n\xaa\x55")):
        out[name] = head
    jpg = good["q75.jpg"].read_bytes()
    sof = jpg.find(b"\xff\xc0")
    for w, h in ((65535, 65535), (0, 16), (16, 0), (1, 65535)):
        out[f"jpeg_{w}x{h}.jpg"] = jpg[: sof + 5] + struct.pack(">HH", h, w) + jpg[sof + 9:]
    out["noninterleaved.jpg"] = noninterleaved_jpeg(48, 40)
    small = Image.open(good["q75.jpg"]).resize((24, 16))
    for typ, val in ((5, struct.pack("<II", 6, 1)), (10, struct.pack("<ii", -12, -2)), (11, struct.pack("<f", 8.0)),
                     (12, struct.pack("<d", 5.0)), (5, struct.pack("<II", 6, 0)), (2, b"6\0\0\0")):
        inline = len(val) <= 4
        ifd = struct.pack("<HHHI", 1, 0x0112, typ, 1) + (val.ljust(4, b"\0") if inline else struct.pack("<I", 26))
        blob = b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + (b"" if inline else val)
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=80, exif=blob)
        out[f"exif_type{typ}_{hashlib.sha1(val).hexdigest()[:6]}.jpg"] = buf.getvalue()
    for o in (5, 6, 7, 8):
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=70, progressive=True, exif=exif(o))
        out[f"progressive_exif{o}.jpg"] = buf.getvalue()
    png = good["rgb.png"].read_bytes()
    out["png_huge_ihdr.png"] = png[:16] + struct.pack(">II", 0x7FFFFFFF, 0x7FFFFFFF) + png[24:]
    return out


def main(out_dir: str) -> int:
    from cpp_corpus import build_bad_inputs, build_corpus

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        good = build_corpus(Path(tmp) / "good")
        bad = build_bad_inputs(Path(tmp) / "bad", good)
        seeds = {name: p.read_bytes() for name, p in {**good, **bad}.items() if p.is_file() and not p.is_fifo()}
        seeds.update(_odd_headers(good))
    written = 0
    for name, data in sorted(seeds.items()):
        if 0 < len(data) <= MAX_SEED:
            (out / name).write_bytes(data)
            written += 1
    print(f"fuzz seeds: {written} files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
