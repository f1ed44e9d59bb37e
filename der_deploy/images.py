"""Image discovery, decoding and preprocessing: the ONLY preprocessing in der-deploy.

Training-time evaluation, export calibration and every runtime call :func:`preprocess`, so the tensor a
model sees cannot drift between stages. The recipe is the test-time ``Warp`` of ML-GCN/DER: resize
straight to the card's (H, W) (no crop, aspect ratio not kept), scale to [0, 1], normalise, CHW.

Decoding policy (:func:`load_image`):
- EXIF orientation is applied, so a phone photo is seen upright.
- Alpha (RGBA, LA, PA, palette transparency) is *dropped*, not composited: this is what
  ``Image.open(p).convert("RGB")`` in the reference training code does, so deployed inputs match.
- 16-bit grayscale (mode ``I;16*`` / ``I``) is scaled 0..65535 -> 0..255 (Pillow's own conversion
  would clip everything above 255 to white).
- Decoding is forced (``img.load()``) with ``ImageFile.LOAD_TRUNCATED_IMAGES`` left False, so a truncated
  file fails here, and a JPEG without its end-of-image marker is rejected as truncated/corrupt. Garbage
  inside the entropy data of an otherwise complete JPEG only makes libjpeg warn; it cannot be detected.
- Shrink-on-load (``draft``, a card's ``decode="draft"``): a JPEG is decoded by libjpeg's DCT scaling at the
  smallest 1/2, 1/4 or 1/8 that still covers the target size (Pillow's ``Image.draft`` rule, with the target's
  sides swapped when the EXIF orientation turns the image sideways). Other formats decode in full.
- ``max_pixels``: an image whose decoded size exceeds it is refused from its header, before any pixel is
  decoded. The decoded size is the DCT-scaled one under ``draft``, except for progressive or non-interleaved
  JPEGs, whose decoder holds every coefficient of the full image: they count at full size.
"""
from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

if TYPE_CHECKING:
    from .card import ModelCard

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm"}
)

# The service default of max_pixels (der-infer, der-infer-cpp, the Triton preprocessing model): README "Large
# images" says why 40 MP. The library functions below have no limit unless given one (Pillow's bomb rule only).
DEFAULT_MAX_PIXELS = 40_000_000
_ORIENTATION = 0x0112

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


@dataclass
class ImageScan:
    """What :func:`scan_images` found: the image paths, and per reason how many folder entries it skipped."""

    files: list[Path] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # "dangling symlink" / "FIFO" / "socket" / "... device"

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def describe_skipped(self) -> str:
        """"skipped in folders: 1 dangling symlink, 2 FIFO", or "" when nothing was skipped."""
        order = ["dangling symlink", "FIFO", "socket", "character device", "block device"]
        kinds = sorted(self.skipped, key=lambda k: (order.index(k) if k in order else len(order), k))
        parts = [f"{self.skipped[k]} {k}" for k in kinds if self.skipped[k]]
        return "skipped in folders: " + ", ".join(parts) if parts else ""


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words."""
    for test, kind in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def scan_images(paths: str | Path | Iterable[str | Path]) -> ImageScan:
    """Expand files and folders into image paths, counting the folder entries that cannot be images.

    Exact rules (the C++ SDK's ``der::find_images`` mirrors them):
    1. ``paths`` are taken in order; each is ``Path(p)`` (pathlib spelling: "./a//b/" -> "a/b").
    2. A path that is a folder (following symlinks) is walked recursively. Symlinks to folders *inside* it
       are not followed, and unreadable sub-folders are passed over (pathlib's ``rglob("*")``).
    3. In a walk, an entry is a candidate when no part of its path relative to the walked folder starts
       with "." (hidden) and its suffix (from the last "." of the name, when that dot is neither the first
       nor the last character) lower-cased is in :data:`IMAGE_EXTENSIONS`. A candidate that is a regular
       file, or a symlink to one, is kept; a folder is not an entry to keep (it is walked by rule 2); a
       dangling symlink (or symlink loop) and anything else (FIFO, socket, device) is skipped and counted
       in ``skipped`` by kind. Nothing is opened.
    4. Each walked folder's kept paths are sorted as pathlib sorts paths: part by part, each part compared
       by code points, undecodable bytes read as U+DC80..U+DCFF (surrogateescape).
    5. Any other existing path (file, FIFO, device, symlink to one) is kept as given whatever its suffix:
       decoding reports a bad one, and :func:`load_image` refuses non-regular files without opening them.
    6. A path that does not exist (or is a dangling symlink) raises :class:`ImageError`.
    7. Duplicates (equal ``Path`` objects) are dropped; the first occurrence wins.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    scan = ImageScan()
    seen: set[Path] = set()

    def add(p: Path) -> None:
        if p not in seen:
            seen.add(p)
            scan.files.append(p)

    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            hits = []
            for p in root.rglob("*"):
                if p.suffix.lower() not in IMAGE_EXTENSIONS or _is_hidden(p.relative_to(root)):
                    continue
                try:
                    mode = p.stat().st_mode  # follows symlinks; never opens
                except OSError:  # dangling symlink, loop, or vanished since listed
                    scan.skipped["dangling symlink"] = scan.skipped.get("dangling symlink", 0) + 1
                    continue
                if stat.S_ISREG(mode):
                    hits.append(p)
                elif not stat.S_ISDIR(mode):
                    kind = file_kind(mode)
                    scan.skipped[kind] = scan.skipped.get(kind, 0) + 1
            for p in sorted(hits):
                add(p)
        elif root.exists():
            add(root)
        else:
            raise ImageError(root, "no such file or folder; check the path")
    return scan


def find_images(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into a list of image paths: :func:`scan_images` (its docstring has the exact
    rules) without the skip counts. In short: files named explicitly are kept as given, folders are walked
    recursively for image suffixes (hidden parts skipped, sorted per folder), order kept, duplicates dropped.
    Raises :class:`ImageError` for a path that does not exist.
    """
    return scan_images(paths).files


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float32)
        # 16-bit range -> 8-bit; round-to-nearest so 65535 -> 255 and 257*k -> k exactly.
        gray = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        # Going through RGBA avoids Pillow's palette-transparency warning; the alpha is dropped below.
        img = img.convert("RGBA")
    return img.convert("RGB")


def _check_jpeg_complete(data: bytes) -> bool:
    sos = data.find(b"\xff\xda")
    return sos >= 0 and data.rfind(b"\xff\xd9") > sos


def load_image(path: str | Path, *, draft: tuple[int, int] | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode ``path`` to an upright RGB image (see the module doc for the policy).

    ``draft``: a target (H, W) for shrink-on-load of JPEGs; ``max_pixels``: refuse larger images (None or 0: no
    limit but Pillow's bomb rule). Raises :class:`ImageError` naming the file for a missing/unreadable file, a
    non-image, a truncated or corrupt file, a decompression bomb, or an image above ``max_pixels``.
    """
    path = Path(path)
    return decode_image(read_image_bytes(path), path, draft=draft, max_pixels=max_pixels)


def read_image_bytes(path: str | Path) -> bytes:
    """The encoded bytes of an image file, with :func:`load_image`'s errors for what cannot be read.

    Shared by :func:`load_image` and clients that send files undecoded (der-infer --triton), so a missing
    file or a FIFO is reported in the same words either way.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode  # before opening: open() on a FIFO blocks until a writer appears
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):
            raise ImageError(path, f"not a regular file (a {file_kind(mode)}); name an image file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageError(path, "is a folder, not an image file") from None
    except OSError as err:
        raise ImageError(path, f"cannot read file ({err.strerror or err})") from None
    return data


def decode_image(data: bytes, name: str | Path = "<bytes>", *, draft: tuple[int, int] | None = None,
                 max_pixels: int | None = None) -> Image.Image:
    """Decode encoded image bytes (a file's content, a request body) with :func:`load_image`'s policy.

    The one decoder behind files and served requests (the Triton preprocessing model), so the two cannot
    drift. ``name`` is what an :class:`ImageError` reports (a path, or e.g. "request item 0"). ``draft`` and
    ``max_pixels`` as in :func:`load_image`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(name, f"expected encoded image bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError(name, "empty (0 bytes), not an image")
    try:
        img = Image.open(io.BytesIO(data))  # in-memory: nothing to close; reads the header only
        if draft is not None or max_pixels:
            _shrink_and_check(img, data, name, draft, max_pixels)
        img.load()
        if img.format == "JPEG" and not _check_jpeg_complete(data):
            raise ImageError(name, "truncated or corrupt JPEG (no end-of-image marker); re-download or re-encode it")
        ImageOps.exif_transpose(img, in_place=True)  # in place: the default copies even an upright image
        return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, "not an image (format not recognised by Pillow)") from None
    except Image.DecompressionBombError as err:
        raise ImageError(name, f"refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as err:
        # Pillow signals truncation/corruption with any of these depending on the codec.
        raise ImageError(name, f"truncated or corrupt image data ({err}); re-download or re-encode it") from None


def decode_target(card: "ModelCard") -> tuple[int, int] | None:
    """The ``draft`` target for decoding images for ``card``: its input size with ``decode="draft"``, else None."""
    return tuple(card.input_size) if card.decode == "draft" else None


def draft_scale(size: tuple[int, int], target: tuple[int, int]) -> int:
    """Pillow's ``JpegImageFile.draft`` rule: the largest of 8, 4, 2, 1 not above min(W // w, H // h).

    ``size`` and ``target`` are both (W, H) in the file's stored orientation."""
    fit = min(size[0] // target[0], size[1] // target[1])
    return next(s for s in (8, 4, 2, 1) if fit >= s or s == 1)


def too_large(size: tuple[int, int], limit: int, scale: int = 1) -> str:
    """The reason an image over ``max_pixels`` is refused (the C++ SDK words it the same)."""
    w, h = size
    if scale > 1:
        sw, sh = -(-w // scale), -(-h // scale)
        return f"too large: {sw}×{sh} (1/{scale} of {w}×{h}) > {limit} pixels; raise --max-pixels"
    return f"too large: {w}×{h} > {limit} pixels; raise --max-pixels"


def _first_scan_components(data: bytes) -> int | None:
    """Components in a JPEG's first scan (SOS), walking the segments as Pillow and libjpeg do; None if not found."""
    pos, n = 2, len(data)
    while pos + 4 < n:
        marker = data[pos + 1]
        if data[pos] != 0xFF or marker == 0xFF:  # junk between segments, or a fill byte: skipped
            pos += 1
        elif marker == 0xDA:
            return data[pos + 4]
        elif marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD8:  # no length field
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


def _shrink_and_check(img: Image.Image, data: bytes, name: str | Path, draft: tuple[int, int] | None,
                      max_pixels: int | None) -> None:
    """Before decoding: set up DCT scaling of a JPEG for ``draft`` (H, W), then apply ``max_pixels``."""
    full = img.size
    scale = 1
    if draft is not None and img.format in ("JPEG", "MPO"):
        h, w = draft
        # exif_transpose turns orientations 5-8 sideways, so the stored image must cover the target's sides swapped.
        if img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
            h, w = w, h
        scale = draft_scale(full, (w, h))
        if scale > 1:
            img.draft("RGB", (w, h))
            # Progressive or non-interleaved: libjpeg buffers the full image's coefficients whatever the scale.
            if img.info.get("progressive") or (_first_scan_components(data) or 0) < getattr(img, "layers", 0):
                scale = 1
    if max_pixels:
        w, h = full
        if -(-w // scale) * -(-h // scale) > max_pixels:
            raise ImageError(name, too_large(full, max_pixels, scale))


def resampling(name: str) -> Image.Resampling:
    """Pillow resampling filter for a card interpolation name."""
    try:
        return _RESAMPLING[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; use one of {', '.join(_RESAMPLING)}") from None


def preprocess(img: Image.Image, card: "ModelCard") -> np.ndarray:
    """Resize to ``card.input_size`` (H, W), scale to [0, 1], normalise, return float32 (3, H, W).

    ``out[c] = (pixel[c] / 255 - mean[c]) / std[c]`` with mean/std always given in (R, G, B) order (the
    ImageNet defaults are); ``channel_order="BGR"`` only reverses the output channels, so out[0] is blue.
    """
    if not isinstance(img, Image.Image):
        raise ValueError(f"preprocess expects a PIL image, got {type(img).__name__}")
    if img.mode != "RGB":
        img = _to_rgb(img)
    h, w = card.input_size
    if img.size != (w, h):
        img = img.resize((w, h), resampling(card.interpolation))  # PIL sizes are (W, H)
    hwc = np.asarray(img)
    std = np.asarray(card.std, dtype=np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    bias = (np.asarray(card.mean, dtype=np.float64) / std).astype(np.float32)
    out = np.empty((3, h, w), dtype=np.float32)
    order = (2, 1, 0) if card.channel_order == "BGR" else (0, 1, 2)
    for c, src in enumerate(order):  # three vectorised passes, no per-pixel Python
        np.multiply(hwc[:, :, src], scale[src], out=out[c], dtype=np.float32)
        out[c] -= bias[src]
    return out


def load_and_preprocess(path: str | Path, card: "ModelCard", *, max_pixels: int | None = None) -> np.ndarray:
    """:func:`load_image` (shrink-on-load when the card says ``decode="draft"``) then :func:`preprocess`; raises
    :class:`ImageError` for a bad file or one above ``max_pixels``."""
    return preprocess(load_image(path, draft=decode_target(card), max_pixels=max_pixels), card)


def stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack (3, H, W) arrays into one contiguous float32 (N, 3, H, W) batch."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("cannot stack an empty list of images into a batch")
    first = np.shape(arrays[0])
    if len(first) != 3:
        raise ValueError(f"expected (3, H, W) arrays, got shape {first}")
    for i, a in enumerate(arrays):
        if np.shape(a) != first:
            raise ValueError(f"cannot stack images of different shapes: item 0 is {first}, item {i} is {np.shape(a)}")
    out = np.empty((len(arrays), *first), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i] = a
    return out
