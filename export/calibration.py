"""Calibration for static INT8: one image list, one reader, one cache of activation ranges.

What is cached: the MinMax activation ranges ONNX Runtime computes (its ``calibration_cache_path`` JSON),
not the decoded images. Ranges are raw per-tensor min/max, independent of the scheme (the quantizer
symmetrises them for S8S8), so the U8S8 file for ONNX Runtime and the S8S8 file for TensorRT share one
calibration pass: the second scheme reads no image at all. Decoded images would be 2.4 MB each at 448 px
(616 MB for 256) and save only the decode, not the inference that dominates calibration.

The cache (``der.calib.json`` beside ``der.onnx`` by default) carries a key over the FP32 model's bytes,
the image list (path, size, mtime) and the card's preprocessing; a different key recomputes and replaces it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import DerError, ImageError
from der_deploy.fileio import sha256_file, write_text

DEFAULT_CALIB_MAX = 256
BATCH = 8
CACHE_FIELD = "der_deploy"


def calibration_images(source: str | Path | Sequence[str | Path], limit: int = DEFAULT_CALIB_MAX) -> list[Path]:
    """Up to ``limit`` images from a folder (or list), spread evenly over the sorted list so that a folder
    sorted by class or date is sampled across its whole range."""
    from der_deploy.images import find_images

    if limit < 1:
        raise DerError(f"--calib-max must be at least 1, got {limit}")
    where = source if isinstance(source, (str, Path)) else "the calibration list"
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise DerError(f"{source}: calibration folder does not exist; give a folder of training-like images with --calib")
    paths = find_images(source)
    if not paths:
        raise DerError(f"no images in {where}; give a folder of .jpg/.png images like the training data with --calib")
    if len(paths) > limit:
        idx = np.linspace(0, len(paths) - 1, limit).round().astype(int)
        paths = [paths[i] for i in idx]
    return paths


def calibration_key(model_path: str | Path, paths: Sequence[Path], card: ModelCard) -> str:
    h = hashlib.sha256()
    h.update(sha256_file(model_path).encode())
    prep = [list(card.input_size), card.interpolation, list(card.mean), list(card.std), card.channel_order]
    h.update(json.dumps(prep).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cached_ranges_valid(cache: Path, key: str) -> bool:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get(CACHE_FIELD, {}).get("key") == key and "data" in data


def store_ranges(ort_cache: Path, cache: Path, key: str, paths: Sequence[Path]) -> Path:
    """Copy ORT's range file to ``cache`` with our key added (atomically)."""
    data = json.loads(ort_cache.read_text(encoding="utf-8"))
    data[CACHE_FIELD] = {"key": key, "images": len(paths), "first": str(paths[0]) if paths else None}
    return write_text(cache, json.dumps(data))


class CalibrationReader:
    """ONNX Runtime CalibrationDataReader over preprocessed images, ``batch`` at a time, with a progress bar.

    Images are decoded lazily, once per pass; an undecodable image fails the calibration with its path.
    """

    def __init__(self, paths: Sequence[Path], card: ModelCard, batch: int = BATCH, input_name: str = "images"):
        self.paths, self.card, self.batch, self.input_name = list(paths), card, batch, input_name
        self.images_read = 0
        self._it: Iterator[np.ndarray] | None = None

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch)

    def _batches(self) -> Iterator[np.ndarray]:
        from der_deploy.images import load_and_preprocess, stack

        for i in range(0, len(self.paths), self.batch):
            chunk = self.paths[i:i + self.batch]
            arrays = []
            for p in chunk:
                try:
                    arrays.append(load_and_preprocess(p, self.card))
                except ImageError as err:
                    raise DerError(f"calibration image {err}; remove it from the calibration folder") from None
            self.images_read += len(chunk)
            yield stack(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            from der_deploy.progress import track

            self._it = iter(track(self._batches(), f"calibrating on {len(self.paths)} images", total=len(self)))
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = None

    def __iter__(self):
        self.rewind()
        while (item := self.get_next()) is not None:
            yield item
