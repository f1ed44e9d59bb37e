"""The dataset object every reader returns: image paths plus an (N, C) int8 target matrix.

Targets use 1 = positive, 0 = negative, -1 = ignore (e.g. a VOC class present only as 'difficult').
Readers parse annotation files once and never decode images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DatasetError

FORMATS = ("voc", "coco", "nuswide", "csv")

# Pascal VOC's 20 classes in the order every paper reports them.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class Dataset(Sequence):
    """Ordered classes, image paths and targets of one split. ``ds[i] -> (Path, int8 target of 1/0/-1)``."""

    def __init__(self, *, name: str, format: str, split: str | None, root: Path, classes: Sequence[str],
                 paths: Sequence[Path], targets: np.ndarray):
        targets = np.asarray(targets, dtype=np.int8)
        if targets.shape != (len(paths), len(classes)):  # a reader bug, not a user error
            raise ValueError(f"targets shape {targets.shape} != ({len(paths)}, {len(classes)})")
        self.name = name
        self.format = format
        self.split = split
        self.root = Path(root)
        self.classes = list(classes)
        self.paths = [Path(p) for p in paths]
        self._targets = targets
        self._targets.setflags(write=False)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("Dataset does not support slicing; use ds.paths / ds.targets()")
        n = len(self.paths)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        return self.paths[i], self._targets[i].copy()

    def __iter__(self) -> Iterator[tuple[Path, np.ndarray]]:
        for i in range(len(self)):
            yield self[i]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def targets(self) -> np.ndarray:
        """(N, C) int8 copy of 1/0/-1."""
        return self._targets.copy()

    def positives(self) -> np.ndarray:
        """Per-class count of images where the class is a positive (1)."""
        return (self._targets == 1).sum(axis=0)

    def ignored(self) -> np.ndarray:
        """Per-class count of images where the class is marked ignore (-1)."""
        return (self._targets == -1).sum(axis=0)

    def label_cardinality(self) -> float:
        """Mean number of positive labels per image."""
        return float((self._targets == 1).sum(axis=1).mean()) if len(self) else 0.0

    def __repr__(self) -> str:
        return f"Dataset({self.format}:{self.name}, split={self.split!r}, images={len(self)}, classes={len(self.classes)})"


def read_class_list(path: Path) -> list[str]:
    """One class name per line; blank lines and '#' comments skipped. Order is the class order."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read class list ({err}); write one class name per line") from None
    names = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not names:
        raise DatasetError(f"{path}: class list is empty; write one class name per line")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DatasetError(f"{path}: class {name!r} is listed twice; remove the duplicate")
        seen.add(name)
    return names


def class_index(classes: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(classes)}
