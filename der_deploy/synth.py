"""Synthetic multi-label scenes written as a real Pascal VOC folder (feeds the demo and the tests).

Each class is a shape or texture (circle, square, triangle, ring, ...). Most objects (``COLOUR_CUE_P``) are
painted near their class's hue, the rest in a random colour, so colour is a partial cue and shape decides
the rest: a small CNN trained from scratch learns it in minutes, and it stays well short of 100 % mAP. Scenes have gradient + blotch backgrounds, distractor strokes and elongated
ellipses, pixel noise, 1-4 objects at random scale/position/rotation with partial occlusion, and small
objects marked ``difficult`` (-> -1 targets). Planted co-occurrence: for pairs (0, 1), (2, 3), (4, 5)
the second class joins the first with probability ``PAIR_P``. ``synth.json`` records the recipe and stats.

Output (atomic: written to a temp folder beside OUT, then renamed):
    OUT/JPEGImages/<id>.jpg  OUT/Annotations/<id>.xml  OUT/ImageSets/Main/{train,val,trainval,test}.txt
    OUT/classes.txt  OUT/synth.json
Same arguments -> byte-identical files (per-image RNG streams seeded by (seed, index)).
"""
from __future__ import annotations

import colorsys
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from .errors import DatasetError, OutputError
from .progress import track

SHAPES = ("circle", "square", "triangle", "ring", "cross", "star", "striped_square", "checker_disc",
          "hexagon", "crescent", "chevron", "frame")
MAX_CLASSES = len(SHAPES)
PAIR_P = 0.8          # P(follower present | leader present) before any object fails to fit
MAX_PAIRS = 3
DIFFICULT_P = 0.1     # chance that an object is small and marked difficult
MAX_OBJECTS = 4
SS = 2                # supersampling factor for anti-aliased masks
JPEG_QUALITY = 90
COLOUR_CUE_P = 0.7    # share of objects painted near their class hue; the rest get a random colour
HUE_JITTER = 0.04


def _regular(n: int, r_in: float | None = None, phase: float = 0.0) -> np.ndarray:
    """Unit polygon with n corners; with r_in, a 2n-corner star alternating radius 1 and r_in."""
    if r_in is None:
        a = phase + np.arange(n) * 2 * np.pi / n
        return np.stack([np.cos(a), np.sin(a)], 1)
    a = phase + np.arange(2 * n) * np.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, r_in)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


_SQUARE = _regular(4, phase=np.pi / 4)
_CROSS = np.array([(-.3, -1), (.3, -1), (.3, -.3), (1, -.3), (1, .3), (.3, .3), (.3, 1), (-.3, 1), (-.3, .3),
                   (-1, .3), (-1, -.3), (-.3, -.3)], dtype=float)
_CHEVRON = np.array([(-.9, -.9), (.1, -.9), (.9, 0), (.1, .9), (-.9, .9), (-.1, 0)], dtype=float)


def _place(poly: np.ndarray, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    c, s = np.cos(angle), np.sin(angle)
    pts = poly @ np.array([[c, s], [-s, c]]) * r + (cx, cy)
    return [tuple(p) for p in pts]


def _mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Anti-aliased float mask in [0, 1] of one object (drawn at SS x, box-downsampled)."""
    big = size * SS
    cx, cy, r = cx * SS, cy * SS, r * SS
    img = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(img)

    def disc(x, y, rr, fill=255):
        d.ellipse([x - rr, y - rr, x + rr, y + rr], fill=fill)

    if shape in ("circle", "checker_disc"):
        disc(cx, cy, r)
    elif shape == "ring":
        disc(cx, cy, r)
        disc(cx, cy, 0.55 * r, 0)
    elif shape == "crescent":
        disc(cx, cy, r)
        disc(cx + 0.45 * r * np.cos(angle), cy + 0.45 * r * np.sin(angle), 0.85 * r, 0)
    elif shape in ("square", "striped_square"):
        d.polygon(_place(_SQUARE, cx, cy, r, angle), fill=255)
    elif shape == "frame":
        d.polygon(_place(_SQUARE, cx, cy, r, angle), fill=255)
        d.polygon(_place(_SQUARE, cx, cy, 0.6 * r, angle), fill=0)
    else:
        poly = {"triangle": _regular(3), "cross": _CROSS, "star": _regular(5, 0.45), "hexagon": _regular(6),
                "chevron": _CHEVRON}[shape]
        d.polygon(_place(poly, cx, cy, r, angle), fill=255)
    return np.asarray(img.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def _texture(shape: str, size: int, cx: float, cy: float, r: float, angle: float,
             a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W, 3) fill: plain colour a, or a two-colour texture for the textured classes."""
    if shape not in ("striped_square", "checker_disc"):
        return np.broadcast_to(a, (size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    if shape == "striped_square":
        on = np.floor(u / max(r / 2.5, 1.5)) % 2 == 0
    else:
        cell = max(r / 2.0, 1.5)
        on = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
    return np.where(on[..., None], a, b)


def _colour(rng: np.random.Generator, avoid: np.ndarray, min_dist: float = 120.0) -> np.ndarray:
    """Random RGB, resampled a few times to stay visibly apart from ``avoid``."""
    col = rng.uniform(0, 255, 3)
    for _ in range(8):
        if np.linalg.norm(col - avoid) >= min_dist:
            break
        col = rng.uniform(0, 255, 3)
    return col.astype(np.float32)


def _class_colour(rng: np.random.Generator, cls: int, classes: int) -> np.ndarray:
    """A colour near class ``cls``'s own hue: a partial cue that makes the set learnable from scratch in minutes."""
    hue = (cls / classes + rng.normal(0.0, HUE_JITTER)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    return (np.asarray(rgb) * 255.0).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip((xx - .5) * np.cos(theta) + (yy - .5) * np.sin(theta) + .5, 0, 1)[..., None]
    bg = c1 * (1 - t) + c2 * t
    blot = Image.fromarray(rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    bg = bg + (np.asarray(blot, dtype=np.float32) - 127.5) * rng.uniform(0.1, 0.3)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 6))):  # strokes and arcs: clutter that is no class
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        width = int(rng.integers(1, max(2, size // 64) + 1))
        if rng.random() < 0.6:
            d.line([x0, y0, x1, y1], fill=fill, width=width)
        else:
            box = [min(x0, x1), min(y0, y1), max(x0, x1) + 2, max(y0, y1) + 2]
            start = float(rng.uniform(0, 360))
            d.arc(box, start, start + float(rng.uniform(60, 200)), fill=fill, width=width)
    for _ in range(int(rng.integers(0, 2))):  # elongated ellipses: blobs that are not circles
        cx, cy = (float(v) for v in rng.uniform(0, size, 2))
        rx = float(rng.uniform(0.08, 0.2)) * size
        ry = rx / float(rng.uniform(2.5, 4.0))
        if rng.random() < 0.5:
            rx, ry = ry, rx
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(img, dtype=np.float32)


def planted_pairs(classes: int) -> list[tuple[int, int]]:
    return [(2 * k, 2 * k + 1) for k in range(min(MAX_PAIRS, classes // 2))]


def _sample_objects(rng: np.random.Generator, classes: int, pairs: list[tuple[int, int]]) -> list[int]:
    n_seed = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
    chosen = [int(c) for c in rng.choice(classes, size=min(n_seed, classes), replace=False)]
    for leader, follower in pairs:
        if leader in chosen and follower not in chosen and rng.random() < PAIR_P:
            chosen.append(follower)
    chosen = chosen[:MAX_OBJECTS]
    objects = list(chosen)
    for c in chosen:  # occasional second instance of a class
        if len(objects) < MAX_OBJECTS and rng.random() < 0.15:
            objects.append(c)
    rng.shuffle(objects)
    return objects


def render(seed: int, index: int, classes: int, size: int) -> tuple[np.ndarray, list[dict]]:
    """One scene: (H, W, 3) uint8 and its objects [{cls, difficult, bbox (1-based inclusive)}]."""
    rng = np.random.default_rng([seed, index])
    img = _background(rng, size)
    pairs = planted_pairs(classes)
    drawn: list[dict] = []
    for cls in _sample_objects(rng, classes, pairs):
        difficult = rng.random() < DIFFICULT_P
        for _ in range(12):  # retry placements that would hide an earlier object
            r = size * (rng.uniform(0.06, 0.09) if difficult else rng.uniform(0.15, 0.28))
            cx, cy = rng.uniform(r, size - r, 2)
            angle = rng.uniform(0, 2 * np.pi)
            mask = _mask(SHAPES[cls], size, cx, cy, r, angle)
            if all(((o["visible"] * (1 - mask)).sum() >= 0.5 * o["area"]) for o in drawn):
                break
        else:
            continue  # no room: the object (and maybe its label) is left out; labels follow pixels
        local = img[int(cy), int(cx)]
        a = _class_colour(rng, cls, classes) if rng.random() < COLOUR_CUE_P else _colour(rng, local)
        fill = _texture(SHAPES[cls], size, cx, cy, r, angle, a, _colour(rng, a))
        m = mask[..., None]
        img = img * (1 - m) + fill * m
        for o in drawn:
            o["visible"] = o["visible"] * (1 - mask)
        ys, xs = np.nonzero(mask > 0.5)
        if len(xs) == 0:
            continue
        bbox = (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)
        drawn.append(dict(cls=cls, difficult=bool(difficult), bbox=bbox, visible=mask, area=float(mask.sum())))
    img = img + rng.normal(0, rng.uniform(2, 8), img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8), [
        {k: o[k] for k in ("cls", "difficult", "bbox")} for o in drawn]


def _xml(image_id: str, size: int, objects: list[dict]) -> str:
    parts = [
        "<annotation>", "\t<folder>JPEGImages</folder>", f"\t<filename>{image_id}.jpg</filename>",
        "\t<source><database>der-deploy synth</database></source>",
        f"\t<size><width>{size}</width><height>{size}</height><depth>3</depth></size>", "\t<segmented>0</segmented>",
    ]
    for o in objects:
        x0, y0, x1, y1 = o["bbox"]
        parts += ["\t<object>", f"\t\t<name>{escape(SHAPES[o['cls']])}</name>", "\t\t<pose>Unspecified</pose>",
                  "\t\t<truncated>0</truncated>", f"\t\t<difficult>{int(o['difficult'])}</difficult>",
                  f"\t\t<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>",
                  "\t</object>"]
    return "\n".join(parts + ["</annotation>", ""])


def _targets(objects: list[dict], classes: int) -> np.ndarray:
    t = np.zeros(classes, dtype=np.int8)
    for o in sorted(objects, key=lambda o: o["difficult"]):  # non-difficult first: 1 wins over -1
        if not o["difficult"]:
            t[o["cls"]] = 1
        elif t[o["cls"]] == 0:
            t[o["cls"]] = -1
    return t


def _stats(targets: np.ndarray, names: list[str], pairs: list[tuple[int, int]]) -> dict:
    present = targets != 0
    n = len(targets)
    rows = []
    for a, b in pairs:
        with_a = present[:, a]
        rows.append({"leader": names[a], "follower": names[b], "p_planted": PAIR_P,
                     "p_follower_given_leader": round(float(present[with_a, b].mean()) if with_a.any() else 0.0, 4),
                     "p_follower": round(float(present[:, b].mean()), 4)})
    return {
        "images": n,
        "label_cardinality": round(float((targets == 1).sum(1).mean()), 4),
        "positives": {c: int(v) for c, v in zip(names, (targets == 1).sum(0))},
        "difficult_only": {c: int(v) for c, v in zip(names, (targets == -1).sum(0))},
        "cooccurrence": rows,
    }


def _splits(rng: np.random.Generator, ids: list[str], test_fraction: float) -> dict[str, list[str]]:
    perm = [ids[i] for i in rng.permutation(len(ids))]
    n_test = min(max(1, round(len(ids) * test_fraction)), len(ids) - 2)
    test, trainval = perm[:n_test], perm[n_test:]
    n_val = max(1, round(len(trainval) * 0.25))
    val, train = trainval[:n_val], trainval[n_val:]
    return {"train": sorted(train), "val": sorted(val), "trainval": sorted(trainval), "test": sorted(test)}


def _check_args(classes: int, images: int, size: int, test_fraction: float) -> None:
    if not 1 <= classes <= MAX_CLASSES:
        raise DatasetError(f"classes={classes}: the generator has {MAX_CLASSES} shapes; use 1..{MAX_CLASSES}")
    if images < 4:
        raise DatasetError(f"images={images}: too few for train/val/test splits; use at least 4")
    if not 32 <= size <= 2048:
        raise DatasetError(f"size={size}: use an image size between 32 and 2048 pixels")
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction={test_fraction}: use a fraction strictly between 0 and 1")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is a file; choose a folder path for the dataset")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out}: folder is not empty; choose another path or pass --overwrite")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create folder {out.parent} ({err.strerror}); choose another path") from None
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"{out}: folder {out.parent} is not writable; choose another output path")


def generate(out: str | Path, *, classes: int = 6, images: int = 300, seed: int = 0, size: int = 128,
             test_fraction: float = 0.3, overwrite: bool = False) -> Path:
    """Write a synthetic VOC-layout dataset to ``out`` and return ``out``."""
    out = Path(out)
    _check_args(classes, images, size, test_fraction)
    _prepare_out(out, overwrite)
    names = list(SHAPES[:classes])
    pairs = planted_pairs(classes)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (tmp / sub).mkdir(parents=True)
        ids = [f"{i:06d}" for i in range(images)]
        targets = np.zeros((images, classes), dtype=np.int8)
        for i in track(range(images), "synth", total=images):
            pixels, objects = render(seed, i, classes, size)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
            (tmp / "JPEGImages" / f"{ids[i]}.jpg").write_bytes(buf.getvalue())
            (tmp / "Annotations" / f"{ids[i]}.xml").write_text(_xml(ids[i], size, objects), encoding="utf-8")
            targets[i] = _targets(objects, classes)
        splits = _splits(np.random.default_rng([seed, images, 7]), ids, test_fraction)
        for split, members in splits.items():
            (tmp / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(m + "\n" for m in members))
        (tmp / "classes.txt").write_text("".join(n + "\n" for n in names))
        meta = {
            "generator": "der-deploy synth", "version": 1, "seed": seed, "classes": names, "images": images,
            "size": size, "test_fraction": test_fraction, "difficult_p": DIFFICULT_P,
            "pairs": [{"leader": names[a], "follower": names[b], "p": PAIR_P} for a, b in pairs],
            "splits": {k: len(v) for k, v in splits.items()}, "stats": _stats(targets, names, pairs),
        }
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished temp folder to ``out``; an old ``out`` is removed only after the rename."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
