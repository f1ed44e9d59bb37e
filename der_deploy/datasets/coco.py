"""COCO instances JSON: the file itself, or a COCO root + split (``annotations/instances_<split>*.json``).

- Classes follow category-id order (so COCO's 80 classes keep their usual order despite id gaps).
- Images keep the JSON's ``images`` order; an image with no annotation is kept with all-zero targets.
- Crowd annotations (``iscrowd=1``) count as positives: the object is in the picture, only its
  segmentation is a blob; COCO has no 'difficult' flag, so no -1 appears.
- Images live in the standard sibling folder (``annotations/instances_val2014.json`` -> ``val2014/``),
  or ``images/val2014/``, or the folder given as ``images=``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .base import Dataset


def is_coco_root(path: Path) -> bool:
    return (path / "annotations").is_dir() and any((path / "annotations").glob("instances_*.json"))


def find_instances_json(root: Path, split: str) -> Path:
    ann = root / "annotations"
    exact = ann / f"instances_{split}.json"
    if exact.is_file():
        return exact
    matches = sorted(ann.glob(f"instances_{split}*.json"))
    if len(matches) == 1:
        return matches[0]
    have = ", ".join(p.stem[len("instances_"):] for p in sorted(ann.glob("instances_*.json"))) or "none"
    if not matches:
        raise DatasetError(f"{ann}: no instances_{split}*.json; available splits: {have}")
    raise DatasetError(f"{ann}: split {split!r} is ambiguous ({have}); give the full split name, e.g. val2014")


def _image_dir(json_path: Path, images: Path | None) -> Path:
    if images is not None:
        images = Path(images)
        if not images.is_dir():
            raise DatasetError(f"{images}: images folder not found; pass the folder holding the COCO images")
        return images
    stem = json_path.stem
    subset = stem[len("instances_"):] if stem.startswith("instances_") else stem
    base = json_path.parent.parent
    for candidate in (base / subset, base / "images" / subset):
        if candidate.is_dir():
            return candidate
    raise DatasetError(f"{json_path}: images folder {base / subset} not found; pass the images folder "
                       f"(--images / images=)")


def _load(json_path: Path) -> dict:
    try:
        with open(json_path, "rb") as f:
            data = json.load(f)
    except OSError as err:
        raise DatasetError(f"{json_path}: cannot read ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{json_path}: not valid JSON ({err}); pass a COCO instances_*.json file") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DatasetError(f"{json_path}: not a COCO instances file (needs images, annotations, categories)")
    return data


def read_coco(path: Path, split: str = "test", images: Path | None = None) -> Dataset:
    path = Path(path)
    json_path = path if path.is_file() else find_instances_json(path, split)
    data = _load(json_path)
    try:
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        classes = [str(c["name"]) for c in cats]
        cat_col = {int(c["id"]): i for i, c in enumerate(cats)}
        imgs = data["images"]
        img_row = {int(im["id"]): i for i, im in enumerate(imgs)}
        file_names = [str(im["file_name"]) for im in imgs]
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{json_path}: malformed category or image entry ({err!r}); "
                           "each needs id and name / file_name") from None
    if not classes:
        raise DatasetError(f"{json_path}: no categories; the file must list the classes")
    if not imgs:
        raise DatasetError(f"{json_path}: no images; the split is empty")
    if len(set(classes)) != len(classes):
        raise DatasetError(f"{json_path}: duplicate category names; make category names unique")

    targets = np.zeros((len(imgs), len(classes)), dtype=np.int8)
    for ann in data["annotations"]:
        try:
            cat_id, img_id = int(ann["category_id"]), int(ann["image_id"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{json_path}: annotation {ann.get('id', '?') if isinstance(ann, dict) else '?'} "
                               "lacks image_id/category_id; fix the file") from None
        col = cat_col.get(cat_id)
        if col is None:
            raise DatasetError(f"{json_path}: annotation {ann.get('id', '?')} has unknown category id {cat_id}; "
                               "add it to categories or drop the annotation")
        row = img_row.get(img_id)
        if row is None:
            raise DatasetError(f"{json_path}: annotation {ann.get('id', '?')} refers to unknown image id {img_id}; "
                               "add the image or drop the annotation")
        targets[row, col] = 1

    image_dir = _image_dir(json_path, images)
    paths = [image_dir / name for name in file_names]
    subset = json_path.stem[len("instances_"):] if json_path.stem.startswith("instances_") else json_path.stem
    return Dataset(name=json_path.stem, format="coco", split=subset, root=json_path.parent, classes=classes,
                   paths=paths, targets=targets)
