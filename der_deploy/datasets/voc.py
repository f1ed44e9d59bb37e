"""Pascal VOC 2007 layout: ``Annotations/<id>.xml`` + ``ImageSets/Main/<split>.txt`` (+ ``JPEGImages/``).

Class order:
1. ``classes.txt`` at the root (one name per line) when present -- our extension, written by
   ``der-data synth``, so non-VOC folders have a stable order;
2. else the 20 VOC classes in the standard order when the folder's objects use VOC names (then any other
   name is an error: a typo, not a new class);
3. else the sorted union of object names over every XML in ``Annotations/`` (same for every split).

A class present in an image only as ``<difficult>1</difficult>`` gets -1 (ignored by the metrics).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .base import VOC_CLASSES, Dataset, class_index, read_class_list

CLASSES_FILE = "classes.txt"


def is_voc_root(path: Path) -> bool:
    return (path / "Annotations").is_dir() and (path / "ImageSets" / "Main").is_dir()


def _read_split(root: Path, split: str) -> list[str]:
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
        raise DatasetError(f"{split_file}: split {split!r} not found; available splits: {', '.join(have) or 'none'}")
    ids = []
    for line in split_file.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts:  # class-specific lists carry a second column ("000005 -1"); the id comes first
            ids.append(parts[0])
    if not ids:
        raise DatasetError(f"{split_file}: split is empty; list one image id per line")
    return ids


def _parse_xml(xml_path: Path) -> tuple[str | None, list[tuple[str, bool]]]:
    """-> (<filename> or None, [(object name, difficult)])."""
    if not xml_path.is_file():
        raise DatasetError(f"{xml_path}: annotation file missing; add it or remove its id from the split list")
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as err:
        raise DatasetError(f"{xml_path}: malformed XML ({err}); fix or regenerate the annotation") from None
    root = tree.getroot()
    filename = root.findtext("filename")
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DatasetError(f"{xml_path}: an <object> has no <name>; add the class name")
        diff_text = (obj.findtext("difficult") or "0").strip()
        if diff_text not in ("0", "1"):
            raise DatasetError(f"{xml_path}: <difficult> of {name!r} is {diff_text!r}; use 0 or 1")
        objects.append((name, diff_text == "1"))
    return (filename.strip() if filename and filename.strip() else None), objects


def _union_classes(root: Path) -> list[str]:
    names: set[str] = set()
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        names.update(name for name, _ in _parse_xml(xml_path)[1])
    return sorted(names)


def read_voc(root: Path, split: str = "test", images: Path | None = None) -> Dataset:
    root = Path(root)
    if not is_voc_root(root):
        raise DatasetError(f"{root}: not a VOC folder (needs Annotations/ and ImageSets/Main/); pass the VOC2007 folder")
    ids = _read_split(root, split)
    image_dir = Path(images) if images is not None else root / "JPEGImages"
    parsed = [(i, root / "Annotations" / f"{i}.xml") for i in ids]
    records = [(xml_path, *_parse_xml(xml_path)) for _, xml_path in parsed]

    classes_file = root / CLASSES_FILE
    if classes_file.is_file():
        classes, source = read_class_list(classes_file), f"listed in {classes_file}"
    elif any(name in VOC_CLASSES for _, _, objs in records for name, _ in objs):
        classes, source = list(VOC_CLASSES), "a Pascal VOC class"
    else:
        union = _union_classes(root)
        if any(name in VOC_CLASSES for name in union):  # a VOC folder whose split holds only typos
            classes, source = list(VOC_CLASSES), "a Pascal VOC class"
        else:
            classes, source = union, "found in Annotations/"
    index = class_index(classes)

    targets = np.zeros((len(ids), len(classes)), dtype=np.int8)
    paths = []
    for row, ((img_id, _), (xml_path, filename, objects)) in enumerate(zip(parsed, records)):
        paths.append(image_dir / (filename or f"{img_id}.jpg"))
        for name, difficult in objects:
            col = index.get(name)
            if col is None:
                raise DatasetError(f"{xml_path}: unknown class {name!r} (not {source}); "
                                   f"fix the name or add it to {classes_file}")
            if not difficult:
                targets[row, col] = 1
            elif targets[row, col] == 0:
                targets[row, col] = -1
    return Dataset(name=root.name, format="voc", split=split, root=root, classes=classes, paths=paths, targets=targets)
