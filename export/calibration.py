"""Calibration for static INT8: one image list, one reader, one cache of activation ranges per method.

What is cached: the activation ranges ONNX Runtime's calibrator computes (the JSON that ``quantize_static`` reads
as ``calibration_cache_path``), not the decoded images. Ranges are raw per tensor, independent of the scheme (the
quantizer symmetrises them for S8S8), so the U8S8 file for ONNX Runtime and the S8S8 file for TensorRT share one
calibration pass: the second scheme reads no image at all. Decoded images would be 2.4 MB each at 448 px
(616 MB for 256) and save only the decode, not the inference that dominates calibration.

Methods (ONNX Runtime's ``CalibrationMethod``): ``minmax`` (the default), ``percentile`` and ``entropy``. Each has
its own cache: ``der.calib.json`` (minmax, the file older exports wrote, still valid) and ``der.calib-percentile.json``
/ ``der.calib-entropy.json``; ORT refuses to quantize from a cache made by another method.
The histogram methods see every calibrated tensor whole, and ORT keeps all of them for every batch it is given before
it histograms them, so :func:`calibrate` feeds one batch of :data:`BATCH` images at a time: memory stays at one
batch's activations plus one histogram per tensor, whatever ``--calib-max`` is.

The cache carries a key over the FP32 model's bytes, the image list (path, size, mtime), the card's preprocessing
and the method (minmax keys are unchanged from before the methods existed); a different key recomputes it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import DerError, ImageError
from der_deploy.fileio import sha256_file, write_text

DEFAULT_CALIB_MAX = 256
BATCH = 8
CACHE_FIELD = "der_deploy"
METHODS = ("minmax", "percentile", "entropy")
_ORT_NAMES = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
# ONNX Runtime's calibrator options per method: its defaults (percentile 99.999 % of a 2048-bin histogram, entropy
# on 128 bins that grow as the range widens), except that percentile cuts both tails (symmetric=False): the cache
# must hold raw ranges for both schemes, and a symmetric range wastes half of uint8's levels on a post-ReLU tensor.
# Entropy's thresholds are symmetric whatever the option (ORT's KL search is centred on zero).
METHOD_OPTIONS: dict[str, dict] = {"minmax": {}, "percentile": {"symmetric": False}, "entropy": {}}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise DerError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    return method


def ort_method(method: str):
    """Our name -> onnxruntime.quantization.CalibrationMethod."""
    from onnxruntime.quantization import CalibrationMethod

    return getattr(CalibrationMethod, _ORT_NAMES[check_method(method)])


def method_cache(cache: str | Path, method: str) -> Path:
    """The cache file of ``method``: ``cache`` itself for minmax, else der.calib.json -> der.calib-entropy.json."""
    cache = Path(cache)
    if check_method(method) == "minmax":
        return cache
    return cache.with_name(f"{cache.stem}-{method}{cache.suffix}")


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


def calibration_key(model_path: str | Path, paths: Sequence[Path], card: ModelCard, method: str = "minmax") -> str:
    h = hashlib.sha256()
    h.update(sha256_file(model_path).encode())
    prep = [list(card.input_size), card.interpolation, list(card.mean), list(card.std), card.channel_order]
    h.update(json.dumps(prep).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if check_method(method) != "minmax":  # minmax keys stay what they were: existing der.calib.json files still hit
        h.update(json.dumps([method, METHOD_OPTIONS[method]], sort_keys=True).encode())
    return h.hexdigest()


def cached_ranges_valid(cache: Path, key: str) -> bool:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get(CACHE_FIELD, {}).get("key") == key and "data" in data


def store_ranges(ort_cache: Path, cache: Path, key: str, paths: Sequence[Path], method: str = "minmax") -> Path:
    """Copy ORT's range file to ``cache`` with our key added (atomically)."""
    data = json.loads(ort_cache.read_text(encoding="utf-8"))
    data[CACHE_FIELD] = {"key": key, "images": len(paths), "first": str(paths[0]) if paths else None, "method": method}
    return write_text(cache, json.dumps(data))


class _OneBatch:
    """A CalibrationDataReader over one feed: lets :func:`calibrate` hand ORT's calibrator one batch per call."""

    def __init__(self, feed: dict[str, np.ndarray]):
        self.feed: dict[str, np.ndarray] | None = feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self.feed = self.feed, None
        return feed


def calibrate(model_path: str | Path, paths: Sequence[Path], card: ModelCard, *, method: str, cache: Path, key: str,
              input_name: str = "images") -> Path:
    """Compute ``method``'s activation ranges with ONNX Runtime's calibrator and store them, keyed, in ``cache``.

    The tensors calibrated are the ones ``quantize_static`` would calibrate itself (its operator registries), so
    minmax gives exactly the ranges it computes; the images go in one batch per call (see the module docstring)."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    reader = CalibrationReader(paths, card, input_name=input_name)
    with tempfile.TemporaryDirectory(prefix="der-calib-") as tmp:
        # ORT's histogram calibrators print their progress to stdout, which is der-export's table output.
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                calibrator = create_calibrator(Path(model_path), ops, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                               calibrate_method=ort_method(method),
                                               extra_options=dict(METHOD_OPTIONS[method]))
                for feed in reader:
                    calibrator.collect_data(_OneBatch(feed))
                ranges = calibrator.compute_data()
            except DerError:
                raise
            except Exception as err:  # onnxruntime.quantization raises plain exceptions
                msg = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
                raise DerError(f"{model_path}: {method} calibration failed: {msg}") from None
        ort_cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, ort_cache)
        return store_ranges(ort_cache, cache, key, paths, method)


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
