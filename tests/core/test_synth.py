"""Synthetic VOC generator and the der-data CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from der_deploy.cli.data import main as cli
from der_deploy.datasets import open_dataset
from der_deploy.errors import DatasetError, OutputError
from der_deploy.synth import SHAPES, generate

SIZE = 64


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("s") / "voc", classes=6, images=300, seed=3, size=SIZE)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_bytes(tmp_path):
    a = generate(tmp_path / "a", classes=4, images=12, seed=5, size=48)
    b = generate(tmp_path / "b", classes=4, images=12, seed=5, size=48)
    c = generate(tmp_path / "c", classes=4, images=12, seed=6, size=48)
    fa = all_files(a)
    assert len(fa) == 12 * 2 + 4 + 2  # jpg + xml per image, 4 split lists, classes.txt, synth.json
    assert fa == all_files(b)
    assert fa["JPEGImages/000000.jpg"] != all_files(c)["JPEGImages/000000.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp folders left behind


def test_layout_readable_both_splits(synth):
    meta = json.loads((synth / "synth.json").read_text())
    names = list(SHAPES[:6])
    assert (synth / "classes.txt").read_text().split() == names == meta["classes"]
    tv, te = open_dataset(synth, "trainval"), open_dataset(synth, "test")
    tr, va = open_dataset(synth, "train"), open_dataset(synth, "val")
    assert tv.format == "voc" and tv.classes == te.classes == names
    assert len(te) == 90 and len(tv) == 210 and len(tr) + len(va) == 210
    assert set(tr.paths) | set(va.paths) == set(tv.paths) and not set(tv.paths) & set(te.paths)
    assert len(set(tv.paths) | set(te.paths)) == 300
    # the recorded stats agree with what the reader sees
    both = np.concatenate([tv.targets(), te.targets()])
    assert meta["stats"]["positives"] == {n: int(v) for n, v in zip(names, (both == 1).sum(0))}
    assert meta["stats"]["difficult_only"] == {n: int(v) for n, v in zip(names, (both == -1).sum(0))}
    # every image has at least one object and at most four distinct classes
    per_image = (both != 0).sum(1)
    assert per_image.max() <= 4 and (per_image >= 1).mean() > 0.95
    assert 1.5 < meta["stats"]["label_cardinality"] < 3.0


def test_planted_cooccurrence(synth):
    t = np.concatenate([open_dataset(synth, s).targets() for s in ("trainval", "test")]) != 0
    meta = json.loads((synth / "synth.json").read_text())
    assert [(p["leader"], p["follower"]) for p in meta["pairs"]] == [
        ("circle", "square"), ("triangle", "ring"), ("cross", "star")]
    for leader, follower in ((0, 1), (2, 3), (4, 5)):
        p_cond = t[t[:, leader], follower].mean()
        p_base = t[:, follower].mean()
        assert p_cond > 0.7 and p_cond > p_base + 0.25, (leader, follower, p_cond, p_base)
    # an unpaired combination stays near independence
    assert t[t[:, 1], 2].mean() < t[:, 2].mean() + 0.15


def test_difficult_marks_and_boxes(synth):
    n_difficult = 0
    for xml_path in sorted((synth / "Annotations").glob("*.xml"))[:100]:
        root = ET.parse(xml_path).getroot()
        assert root.findtext("filename") == xml_path.stem + ".jpg"
        assert root.findtext("size/width") == str(SIZE)
        for obj in root.iter("object"):
            assert obj.findtext("name") in SHAPES[:6]
            n_difficult += obj.findtext("difficult") == "1"
            box = [int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
            assert 1 <= box[0] <= box[2] <= SIZE and 1 <= box[1] <= box[3] <= SIZE
    assert n_difficult > 0
    assert (open_dataset(synth, "trainval").targets() == -1).any()


def test_images_decode_at_size(synth):
    ds = open_dataset(synth, "test")
    for path, _ in list(ds)[:20]:
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (SIZE, SIZE) and im.mode == "RGB"
            arr = np.asarray(im)
        assert arr.std() > 10  # not a blank canvas


def test_colour_is_only_a_partial_cue(synth):
    """Most solid objects carry their class hue at their centre, but a clear share does not: shape must decide."""
    import colorsys

    from der_deploy.synth import COLOUR_CUE_P

    ds = open_dataset(synth, "trainval")
    solid = {"circle", "square", "triangle", "cross", "star"}  # filled at the centre, untextured
    near = total = 0
    for path, _ in list(ds)[:200]:
        arr = np.asarray(Image.open(path), dtype=np.float32) / 255.0
        for obj in ET.parse(synth / "Annotations" / (path.stem + ".xml")).getroot().iter("object"):
            name = obj.findtext("name")
            if name not in solid or obj.findtext("difficult") == "1":
                continue
            x0, y0, x1, y1 = (int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            rgb = arr[(y0 + y1) // 2 - 2:(y0 + y1) // 2 + 1, (x0 + x1) // 2 - 2:(x0 + x1) // 2 + 1].reshape(-1, 3).mean(0)
            hue = colorsys.rgb_to_hsv(*rgb)[0]
            target = ds.classes.index(name) / len(ds.classes)
            near += min(abs(hue - target), 1 - abs(hue - target)) < 0.1
            total += 1
    share = near / total
    assert total > 100
    assert 0.45 < share < 0.95, share  # planted: COLOUR_CUE_P of objects, minus occluded centres, plus chance hits
    assert COLOUR_CUE_P < 1.0


def test_overwrite_and_argument_errors(tmp_path):
    out = generate(tmp_path / "o", classes=2, images=4, size=32)
    with pytest.raises(OutputError, match=r"o: folder is not empty.*--overwrite"):
        generate(out, classes=2, images=4, size=32)
    generate(out, classes=3, images=5, size=32, overwrite=True)
    assert len(list((out / "JPEGImages").iterdir())) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    with pytest.raises(DatasetError, match="classes=13"):
        generate(tmp_path / "x", classes=13)
    with pytest.raises(DatasetError, match="test_fraction=1.0"):
        generate(tmp_path / "x", test_fraction=1.0)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is a file"):
        generate(tmp_path / "file")


def test_cli_synth_and_info(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["synth", str(tmp_path / "d"), "--classes", "4", "--images", "20", "--size", "32",
                              "--seed", "1", "--test-fraction", "0.25"])
    assert res.exit_code == 0, res.output
    assert "circle -> square" in res.output and "test 5" in res.output
    res = runner.invoke(cli, ["info", str(tmp_path / "d"), "--split", "trainval"])
    assert res.exit_code == 0, res.output
    assert "voc" in res.output and "trainval" in res.output and "15" in res.output and "ring" in res.output
    res = runner.invoke(cli, ["synth", str(tmp_path / "d"), "--images", "20"])
    assert res.exit_code == 2 and "error:" in res.output and "--overwrite" in res.output
    res = runner.invoke(cli, ["info", str(tmp_path / "d"), "--split", "nope"])
    assert res.exit_code == 2 and "nope.txt: split 'nope' not found" in res.output
    res = runner.invoke(cli, ["synth", "--help"])
    assert res.exit_code == 0 and "--test-fraction" in res.output


def test_cli_subprocess_one_line_error(tmp_path):
    exe = Path(sys.executable).parent / "der-data"
    if not exe.exists():
        pytest.skip("der-data console script not installed in this environment")
    bad = tmp_path / "bad.csv"
    bad.write_text("")
    env = dict(os.environ, DER_NO_PROGRESS="1")
    proc = subprocess.run([str(exe), "info", str(bad)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0]
    assert "Traceback" not in proc.stderr
