"""NUS-WIDE official layout.

    ROOT/ImageList/{Train,Test}Imagelist.txt      Windows-style relative paths, e.g. ``actor\\0001_2124494179.jpg``
    ROOT/Flickr/<those paths>                     the images (or ``images=``)
    ROOT/Concepts81.txt (or ConceptsList/)        class order; if absent, sorted concept names of the label files
    ROOT/TrainTestLabels/Labels_<concept>_{Train,Test}.txt   one 0/1 per line, aligned with the image list

Images with no positive concept are kept (all-zero targets); filter them yourself if a protocol drops them.
"""
from __future__ import annotations

from pathlib import Path, PureWindowsPath

import numpy as np

from ..errors import DatasetError
from .base import Dataset, read_class_list

SPLITS = {"train": "Train", "test": "Test"}


def is_nuswide_root(path: Path) -> bool:
    return (path / "ImageList").is_dir() and (path / "TrainTestLabels").is_dir()


def _concepts(root: Path, tag: str) -> list[str]:
    for candidate in (root / "Concepts81.txt", root / "ConceptsList" / "Concepts81.txt"):
        if candidate.is_file():
            return read_class_list(candidate)
    prefix, suffix = "Labels_", f"_{tag}.txt"
    names = sorted(p.name[len(prefix):-len(suffix)] for p in (root / "TrainTestLabels").glob(f"{prefix}*{suffix}"))
    if not names:
        raise DatasetError(f"{root / 'TrainTestLabels'}: no Labels_<concept>_{tag}.txt files; "
                           "add the label files or Concepts81.txt")
    return names


def _read_labels(path: Path, n_images: int) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: label file missing; every concept needs Labels_<concept>_<Split>.txt")
    tokens = path.read_text(encoding="utf-8").split()
    if len(tokens) != n_images:
        raise DatasetError(f"{path}: {len(tokens)} labels but the image list has {n_images} images; "
                           "the files must be line-aligned")
    bad = next((t for t in tokens if t not in ("0", "1")), None)
    if bad is not None:
        raise DatasetError(f"{path}: label {bad!r} is not 0 or 1; fix the file")
    return np.fromiter((t == "1" for t in tokens), dtype=np.int8, count=n_images)


def read_nuswide(root: Path, split: str = "test", images: Path | None = None) -> Dataset:
    root = Path(root)
    tag = SPLITS.get(split.lower())
    if tag is None:
        raise DatasetError(f"{root}: NUS-WIDE split {split!r} unknown; use train or test")
    list_file = root / "ImageList" / f"{tag}Imagelist.txt"
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: image list missing; NUS-WIDE needs ImageList/{tag}Imagelist.txt")
    rel = [ln.strip() for ln in list_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not rel:
        raise DatasetError(f"{list_file}: image list is empty; the split has no images")
    image_dir = Path(images) if images is not None else root / "Flickr"
    # The official lists use backslashes; PureWindowsPath splits them on every OS.
    paths = [image_dir.joinpath(*PureWindowsPath(r).parts) for r in rel]

    classes = _concepts(root, tag)
    targets = np.empty((len(rel), len(classes)), dtype=np.int8)
    for col, concept in enumerate(classes):
        targets[:, col] = _read_labels(root / "TrainTestLabels" / f"Labels_{concept}_{tag}.txt", len(rel))
    return Dataset(name=root.name, format="nuswide", split=tag.lower(), root=root, classes=classes, paths=paths,
                   targets=targets)
