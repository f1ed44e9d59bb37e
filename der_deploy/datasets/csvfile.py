"""Plain CSV: one image per row, ``path,label1|label2``.

- An optional header row ``path,labels`` is detected and skipped.
- Relative paths are relative to the CSV's folder (or to ``images=``).
- Class order: ``classes.txt`` beside the CSV when present (then unknown labels are errors), else the sorted
  union of labels in the file. A blank label cell means no class (all-zero target).
- A folder holding ``<split>.csv`` also works, so ``split`` picks the file.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .base import Dataset, class_index, read_class_list

HEADER_PATH = {"path", "image", "file", "filename", "file_name"}
HEADER_LABELS = {"labels", "label", "tags", "classes"}
LABEL_SEP = "|"


def csv_for_split(folder: Path, split: str) -> Path | None:
    candidate = folder / f"{split}.csv"
    return candidate if candidate.is_file() else None


def _rows(csv_path: Path) -> list[tuple[int, str, list[str]]]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{csv_path}: cannot read ({err}); save it as UTF-8 text") from None
    rows = []
    for lineno, cells in enumerate(csv.reader(text.splitlines()), start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if lineno == 1 and cells[0].strip().lower() in HEADER_PATH and (
                len(cells) < 2 or cells[1].strip().lower() in HEADER_LABELS):
            continue
        if len(cells) > 2:
            raise DatasetError(f"{csv_path}:{lineno}: {len(cells)} columns; write 'path,label1|label2' "
                               "(separate labels with |, quote paths containing commas)")
        path = cells[0].strip()
        if not path:
            raise DatasetError(f"{csv_path}:{lineno}: empty image path; every row starts with the image path")
        labels = [t.strip() for t in (cells[1] if len(cells) > 1 else "").split(LABEL_SEP) if t.strip()]
        rows.append((lineno, path, labels))
    if not rows:
        raise DatasetError(f"{csv_path}: no image rows; write one 'path,label1|label2' row per image")
    return rows


def read_csv(path: Path, split: str = "test", images: Path | None = None) -> Dataset:
    path = Path(path)
    csv_path = path
    if path.is_dir():
        found = csv_for_split(path, split)
        if found is None:
            raise DatasetError(f"{path}: no {split}.csv in this folder; pass the CSV file itself")
        csv_path = found
    rows = _rows(csv_path)

    classes_file = csv_path.parent / "classes.txt"
    if classes_file.is_file():
        classes = read_class_list(classes_file)
    else:
        classes = sorted({label for _, _, labels in rows for label in labels})
        if not classes:
            raise DatasetError(f"{csv_path}: no labels in any row; add labels or a classes.txt beside the CSV")
    index = class_index(classes)

    base = Path(images) if images is not None else csv_path.parent
    targets = np.zeros((len(rows), len(classes)), dtype=np.int8)
    paths = []
    for row, (lineno, rel, labels) in enumerate(rows):
        paths.append(base / rel)  # an absolute rel replaces base
        for label in labels:
            col = index.get(label)
            if col is None:
                raise DatasetError(f"{csv_path}:{lineno}: unknown label {label!r} (not in {classes_file}); "
                                   "fix the label or add it to classes.txt")
            targets[row, col] = 1
    return Dataset(name=csv_path.stem, format="csv", split=split if path.is_dir() else csv_path.stem,
                   root=csv_path.parent, classes=classes, paths=paths, targets=targets)
