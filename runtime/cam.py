"""CADM heat-map overlays, as in the paper's Fig. 2: one PNG per image and predicted label.

Each class-aware disentangled map A_c (h x w, Eq. 2) is upsampled bilinearly to the original image size
(the paper's "linear interpolation"), min-max normalised *per map* to [0, 1], coloured with a built-in
jet-like colormap and alpha-blended over the image. Per-map normalisation shows *where* a class fires; it
hides how strongly compared with other classes (read that from the scores).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from der_deploy.fileio import atomic_path

# (position, R, G, B): dark blue -> blue -> cyan -> yellow -> red -> dark red.
_ANCHORS = np.array([
    (0.000, 0, 0, 128), (0.125, 0, 0, 255), (0.375, 0, 255, 255),
    (0.625, 255, 255, 0), (0.875, 255, 0, 0), (1.000, 128, 0, 0),
], dtype=np.float64)


def colormap(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 lookup table, piecewise linear between the anchors."""
    t = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(t, _ANCHORS[:, 0], _ANCHORS[:, k]) for k in (1, 2, 3)], axis=1).round().astype(np.uint8)


_LUT = colormap()


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one (h, w) map to ``size`` = (W, H) (PIL order), float32."""
    img = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32), mode="F")
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def normalise(cam: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant map becomes all zeros (nothing stands out)."""
    lo, hi = float(np.min(cam)), float(np.max(cam))
    if not hi > lo:
        return np.zeros_like(cam, dtype=np.float32)
    return ((cam - lo) / (hi - lo)).astype(np.float32)


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Colour ``cam`` (h, w) and blend it over ``image``: ``(1 - alpha) * image + alpha * colour``."""
    heat = normalise(upsample(cam, image.size))
    colour = _LUT[np.clip(np.rint(heat * (len(_LUT) - 1)), 0, len(_LUT) - 1).astype(np.intp)]
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    out = (1.0 - alpha) * base + alpha * colour.astype(np.float32)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="RGB")


def safe_name(text: str) -> str:
    """File-name-safe version of a class name or stem: keeps letters, digits, '.', '_', '-'."""
    name = re.sub(r"[^\w.-]+", "_", str(text), flags=re.ASCII).strip("._")
    return name or "_"


class CamWriter:
    """Writes ``DIR/<stem>_<label>.png`` atomically; a stem seen before (same file name in another
    folder) gets ``-2``, ``-3``... so no overlay overwrites another of the same run."""

    def __init__(self, out_dir: str | Path, classes: Sequence[str], alpha: float = 0.5):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.out_dir = Path(out_dir)
        self.alpha = alpha
        self.classes = list(classes)
        names: dict[str, str] = {}
        for i, c in enumerate(self.classes):
            n = safe_name(c)
            names[c] = n if n not in names.values() else f"{n}-{i}"
        self._label_names = names
        self._stems: dict[str, int] = {}

    def _stem(self, path: str | Path | None) -> str:
        stem = safe_name(Path(path).stem) if path else "image"
        count = self._stems.get(stem, 0) + 1
        self._stems[stem] = count
        return stem if count == 1 else f"{stem}-{count}"

    def write(self, image: Image.Image, cadm: np.ndarray, labels: Sequence[str], path: str | Path | None = None) -> list[Path]:
        """Overlays for ``labels`` (class names) from ``cadm`` (C, h, w); returns the written files."""
        cadm = np.asarray(cadm)
        if cadm.ndim != 3 or cadm.shape[0] != len(self.classes):
            raise ValueError(f"cadm must be (C={len(self.classes)}, h, w), got {cadm.shape}")
        stem = self._stem(path)
        written = []
        for label in labels:
            dest = self.out_dir / f"{stem}_{self._label_names[label]}.png"
            img = overlay(image, cadm[self.classes.index(label)], self.alpha)
            with atomic_path(dest) as tmp:
                img.save(tmp, format="PNG")
            written.append(dest)
        return written
