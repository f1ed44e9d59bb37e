"""Multi-label dataset readers: Pascal VOC 2007, COCO instances JSON, NUS-WIDE, plain CSV.

``open_dataset(path, split)`` detects the format from the path (override with ``format=``) and returns a
:class:`Dataset`: ordered ``.classes``, ``ds[i] -> (image path, int8 target of 1/0/-1)``, ``.targets()``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .base import FORMATS, VOC_CLASSES, Dataset, read_class_list
from .coco import is_coco_root, read_coco
from .csvfile import csv_for_split, read_csv
from .nuswide import is_nuswide_root, read_nuswide
from .voc import is_voc_root, read_voc

_READERS = {"voc": read_voc, "coco": read_coco, "nuswide": read_nuswide, "csv": read_csv}

__all__ = ["Dataset", "FORMATS", "VOC_CLASSES", "detect_format", "open_dataset", "read_class_list"]


def detect_format(path: str | Path, split: str = "test") -> str:
    """'voc' | 'coco' | 'nuswide' | 'csv' from the file suffix or the folder layout."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: dataset path not found; check the path")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return "coco"
        if suffix == ".csv":
            return "csv"
        raise DatasetError(f"{path}: cannot tell the dataset format from '{suffix}'; "
                           "pass a .json/.csv file or a dataset folder, or set the format")
    if is_voc_root(path):
        return "voc"
    if is_nuswide_root(path):
        return "nuswide"
    if is_coco_root(path):
        return "coco"
    if csv_for_split(path, split) is not None:
        return "csv"
    hint = ""
    nested = [p for p in sorted(path.iterdir()) if p.is_dir() and is_voc_root(p)]
    if nested:
        hint = f" (did you mean {nested[0]}?)"
    raise DatasetError(f"{path}: not a known dataset layout{hint}; expected a VOC folder (Annotations/, "
                       "ImageSets/Main/), a COCO root or instances JSON, a NUS-WIDE root (ImageList/, "
                       "TrainTestLabels/) or a CSV file")


def open_dataset(path: str | Path, split: str = "test", *, format: str | None = None,
                 images: str | Path | None = None) -> Dataset:
    """Read one split of a dataset. ``images`` overrides where image files live (COCO, NUS-WIDE, CSV, VOC)."""
    path = Path(path)
    if format is None:
        format = detect_format(path, split)
    else:
        format = format.lower()
        if format not in _READERS:
            raise DatasetError(f"{path}: unknown dataset format {format!r}; use one of {', '.join(FORMATS)}")
        if not path.exists():
            raise DatasetError(f"{path}: dataset path not found; check the path")
    return _READERS[format](path, split, None if images is None else Path(images))
