"""der-data: generate synthetic multi-label data and inspect datasets."""
from __future__ import annotations

from pathlib import Path

import click

from ._common import handle_errors

FORMAT_CHOICES = ("voc", "coco", "nuswide", "csv")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Generate synthetic multi-label data (synth) and inspect dataset folders (info)."""


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--classes", "-c", default=6, show_default=True, type=click.IntRange(1, 12),
              help="Number of object classes (shapes/textures), at most 12.")
@click.option("--images", "-n", default=300, show_default=True, type=click.IntRange(4, None),
              help="Number of images to generate.")
@click.option("--seed", "-s", default=0, show_default=True, type=int,
              help="Random seed; the same seed gives byte-identical output.")
@click.option("--size", default=128, show_default=True, type=click.IntRange(32, 2048),
              help="Image side in pixels (square images).")
@click.option("--test-fraction", default=0.3, show_default=True, type=click.FloatRange(0, 1, min_open=True,
              max_open=True), help="Fraction of images in the test split; the rest is trainval (3:1 train:val).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists and is not empty.")
@handle_errors
def synth(out: Path, classes: int, images: int, seed: int, size: int, test_fraction: float, overwrite: bool) -> None:
    """Write a synthetic Pascal VOC-layout dataset to OUT.

    Scenes hold 1-4 shape/texture objects in random colours on cluttered backgrounds; some class pairs
    co-occur on purpose and small objects are marked difficult. OUT gets JPEGImages/, Annotations/,
    ImageSets/Main/{train,val,trainval,test}.txt, classes.txt and synth.json (recipe and statistics).
    """
    import json

    from ..progress import out_console, table
    from ..synth import generate

    root = generate(out, classes=classes, images=images, seed=seed, size=size, test_fraction=test_fraction,
                    overwrite=overwrite)
    meta = json.loads((root / "synth.json").read_text())
    stats = meta["stats"]
    rows = [(name, stats["positives"][name], stats["difficult_only"][name]) for name in meta["classes"]]
    out_console.print(table(f"{root}: {images} images, {size}x{size}, seed {seed}, "
                            f"{stats['label_cardinality']:.2f} labels/image", ["class", "positives", "difficult-only"],
                            rows))
    pair_rows = [(f"{p['leader']} -> {p['follower']}", f"{p['p_follower_given_leader']:.2f}", f"{p['p_follower']:.2f}")
                 for p in stats["cooccurrence"]]
    if pair_rows:
        out_console.print(table("planted co-occurrence", ["pair", "P(follower | leader)", "P(follower)"], pair_rows))
    out_console.print("splits: " + ", ".join(f"{k} {v}" for k, v in meta["splits"].items()))


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True,
              help="Split to read: a VOC ImageSets/Main name, a COCO subset (val2014), train/test for NUS-WIDE.")
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES, case_sensitive=False), default=None,
              help="Dataset format; detected from PATH when omitted.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Folder holding the images, when not in the standard place.")
@handle_errors
def info(path: Path, split: str, fmt: str | None, images: Path | None) -> None:
    """Summarise one split of a dataset at PATH (VOC folder, COCO JSON/root, NUS-WIDE root or CSV)."""
    from ..datasets import open_dataset
    from ..progress import out_console, table

    ds = open_dataset(path, split, format=fmt, images=images)
    out_console.print(table(f"{path}", ["field", "value"], [
        ("format", ds.format), ("split", ds.split), ("images", len(ds)), ("classes", ds.num_classes),
        ("labels/image", f"{ds.label_cardinality():.2f}"),
    ]))
    out_console.print(table("per-class", ["class", "positives", "ignored (-1)"],
                            zip(ds.classes, ds.positives(), ds.ignored())))
