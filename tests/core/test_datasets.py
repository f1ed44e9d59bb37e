"""Dataset readers on small real-layout fixtures: classes, order and targets exactly; every error names the file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from der_deploy.datasets import VOC_CLASSES, detect_format, open_dataset
from der_deploy.errors import DatasetError


# ---------------------------------------------------------------- fixtures: write real layouts
def voc_xml(filename: str | None, objects: list[tuple[str, int]]) -> str:
    objs = "".join(f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
                   "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
                   for n, d in objects)
    fn = f"<filename>{filename}</filename>" if filename else ""
    return f"<annotation><folder>VOC2007</folder>{fn}<size><width>10</width><height>10</height>" \
           f"<depth>3</depth></size>{objs}</annotation>"


def make_voc(root: Path, annotations: dict[str, list[tuple[str, int]]], splits: dict[str, list[str]],
             classes: list[str] | None = None) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for img_id, objs in annotations.items():
        (root / "Annotations" / f"{img_id}.xml").write_text(voc_xml(f"{img_id}.jpg", objs))
    for split, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


@pytest.fixture
def voc(tmp_path) -> Path:
    return make_voc(tmp_path / "VOC2007", {
        "000005": [("chair", 0), ("chair", 1), ("diningtable", 1)],  # diningtable only difficult -> -1
        "000007": [("car", 0)],
        "000009": [("person", 1), ("person", 0), ("horse", 0)],  # difficult + non-difficult -> 1
        "000012": [("tvmonitor", 0)],
    }, {"test": ["000005", "000007", "000009"], "train": ["000012"]})


def coco_json(categories, images, annotations) -> str:
    return json.dumps({"info": {}, "images": images, "annotations": annotations, "categories": categories})


@pytest.fixture
def coco(tmp_path) -> Path:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    cats = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]  # out of id order
    imgs = [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"},
            {"id": 7, "file_name": "COCO_val2014_000000000007.jpg"},
            {"id": 9, "file_name": "COCO_val2014_000000000009.jpg"}]  # 9: no annotation
    anns = [{"id": 1, "image_id": 42, "category_id": 18, "iscrowd": 0},
            {"id": 2, "image_id": 42, "category_id": 1, "iscrowd": 1},  # crowd counts as positive
            {"id": 3, "image_id": 7, "category_id": 3, "iscrowd": 0},
            {"id": 4, "image_id": 7, "category_id": 3, "iscrowd": 0}]
    (root / "annotations" / "instances_val2014.json").write_text(coco_json(cats, imgs, anns))
    return root


def make_nus(root: Path, train: list[str], test: list[str], labels: dict[str, tuple[str, str]],
             concepts: list[str] | None) -> Path:
    (root / "ImageList").mkdir(parents=True)
    (root / "TrainTestLabels").mkdir()
    (root / "ImageList" / "TrainImagelist.txt").write_text("\r\n".join(train) + "\r\n")
    (root / "ImageList" / "TestImagelist.txt").write_text("\r\n".join(test) + "\r\n")
    for concept, (tr, te) in labels.items():
        (root / "TrainTestLabels" / f"Labels_{concept}_Train.txt").write_text("".join(f"{c}\n" for c in tr))
        (root / "TrainTestLabels" / f"Labels_{concept}_Test.txt").write_text("".join(f"{c}\n" for c in te))
    if concepts is not None:
        (root / "Concepts81.txt").write_text("\n".join(concepts) + "\n")
    return root


@pytest.fixture
def nus(tmp_path) -> Path:
    return make_nus(tmp_path / "nuswide",
                    train=["actor\\0001_2124494179.jpg", "sky\\0002_1.jpg"],
                    test=["actor\\0003_5.jpg", "water\\0004_6.jpg", "sky\\0005_7.jpg"],
                    labels={"sky": ("01", "001"), "animal": ("10", "000"), "water": ("00", "011")},
                    concepts=["water", "sky", "animal"])


# ---------------------------------------------------------------- VOC
def test_voc_classes_paths_targets(voc):
    ds = open_dataset(voc, "test")
    assert ds.format == "voc" and ds.name == "VOC2007" and ds.split == "test"
    assert ds.classes == list(VOC_CLASSES)
    assert len(ds) == 3
    assert ds.paths == [voc / "JPEGImages" / f"{i}.jpg" for i in ("000005", "000007", "000009")]
    t = ds.targets()
    assert t.dtype == np.int8 and t.shape == (3, 20)
    c = {n: i for i, n in enumerate(VOC_CLASSES)}
    expected = np.zeros((3, 20), np.int8)
    expected[0, c["chair"]] = 1
    expected[0, c["diningtable"]] = -1
    expected[1, c["car"]] = 1
    expected[2, c["person"]] = 1
    expected[2, c["horse"]] = 1
    np.testing.assert_array_equal(t, expected)
    path, target = ds[-1]
    assert path == voc / "JPEGImages" / "000009.jpg" and target.dtype == np.int8
    np.testing.assert_array_equal(target, expected[2])
    with pytest.raises(IndexError):
        ds[3]
    assert [p for p, _ in ds] == ds.paths
    assert list(ds.positives()[[c["chair"], c["diningtable"]]]) == [1, 0] and ds.ignored()[c["diningtable"]] == 1


def test_voc_filename_from_xml_and_class_specific_split_lines(tmp_path):
    root = make_voc(tmp_path / "v", {"a": [("dog", 0)]}, {"test": []})
    (root / "Annotations" / "a.xml").write_text(voc_xml("pictures/a.png", [("dog", 0)]))
    (root / "ImageSets" / "Main" / "test.txt").write_text("a  1\n\n")  # "id label" lines, blank line
    ds = open_dataset(root, "test")
    assert ds.paths == [root / "JPEGImages" / "pictures" / "a.png"]


def test_voc_classes_txt_order_and_union_fallback(tmp_path):
    ann = {"1": [("zebra", 0)], "2": [("apple", 1)], "3": [("mango", 0)]}
    listed = make_voc(tmp_path / "a", ann, {"test": ["1", "2"]}, classes=["zebra", "mango", "apple"])
    ds = open_dataset(listed, "test")
    assert ds.classes == ["zebra", "mango", "apple"]
    np.testing.assert_array_equal(ds.targets(), [[1, 0, 0], [0, 0, -1]])
    # without classes.txt: sorted union over every XML, so train and test agree on the order
    union = make_voc(tmp_path / "b", ann, {"test": ["1", "2"], "train": ["3"]})
    assert open_dataset(union, "test").classes == ["apple", "mango", "zebra"]
    assert open_dataset(union, "train").classes == ["apple", "mango", "zebra"]
    np.testing.assert_array_equal(open_dataset(union, "train").targets(), [[0, 1, 0]])


def test_voc_errors_name_the_file(tmp_path, voc):
    (voc / "ImageSets" / "Main" / "missing.txt").write_text("000005\n999999\n")
    with pytest.raises(DatasetError, match=r"999999\.xml.*missing"):
        open_dataset(voc, "missing")

    (voc / "Annotations" / "000013.xml").write_text(voc_xml("000013.jpg", [("persn", 0)]))
    (voc / "ImageSets" / "Main" / "typo.txt").write_text("000013\n")
    with pytest.raises(DatasetError, match=r"000013\.xml.*unknown class 'persn'"):
        open_dataset(voc, "typo")

    (voc / "ImageSets" / "Main" / "empty.txt").write_text("\n \n")
    with pytest.raises(DatasetError, match=r"empty\.txt.*empty"):
        open_dataset(voc, "empty")

    (voc / "Annotations" / "000014.xml").write_text("<annotation><object><name>dog</name></annotation>")
    (voc / "ImageSets" / "Main" / "bad.txt").write_text("000014\n")
    with pytest.raises(DatasetError, match=r"000014\.xml.*malformed XML"):
        open_dataset(voc, "bad")

    with pytest.raises(DatasetError, match=r"nosuch\.txt.*available splits: .*test"):
        open_dataset(voc, "nosuch")

    listed = make_voc(tmp_path / "c", {"1": [("cat", 0), ("dragon", 0)]}, {"test": ["1"]}, classes=["cat"])
    with pytest.raises(DatasetError, match=r"1\.xml.*unknown class 'dragon'.*classes\.txt"):
        open_dataset(listed, "test")


# ---------------------------------------------------------------- COCO
def test_coco_root_and_json_file(coco):
    expected_classes = ["person", "car", "dog"]  # category ids 1, 3, 18
    expected = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]], np.int8)
    for ds in (open_dataset(coco, "val2014"), open_dataset(coco, "val"),
               open_dataset(coco / "annotations" / "instances_val2014.json")):
        assert ds.format == "coco" and ds.split == "val2014"
        assert ds.classes == expected_classes
        assert ds.paths == [coco / "val2014" / f"COCO_val2014_0000000000{i}.jpg" for i in ("42", "07", "09")]
        np.testing.assert_array_equal(ds.targets(), expected)


def test_coco_explicit_images_folder(tmp_path, coco):
    elsewhere = tmp_path / "labels.json"
    elsewhere.write_text((coco / "annotations" / "instances_val2014.json").read_text())
    with pytest.raises(DatasetError, match=r"labels\.json.*images folder.*not found"):
        open_dataset(elsewhere)
    pics = tmp_path / "pics"
    pics.mkdir()
    ds = open_dataset(elsewhere, images=pics)
    assert ds.paths[0] == pics / "COCO_val2014_000000000042.jpg"
    with pytest.raises(DatasetError, match="nowhere"):
        open_dataset(elsewhere, images=tmp_path / "nowhere")


def test_coco_errors(tmp_path, coco):
    bad = tmp_path / "annotations" / "instances_bad.json"
    bad.parent.mkdir()
    (tmp_path / "bad").mkdir()
    bad.write_text(coco_json([{"id": 1, "name": "a"}], [{"id": 1, "file_name": "x.jpg"}],
                             [{"id": 77, "image_id": 1, "category_id": 5}]))
    with pytest.raises(DatasetError, match=r"instances_bad\.json: annotation 77 has unknown category id 5"):
        open_dataset(bad)
    bad.write_text(coco_json([{"id": 1, "name": "a"}], [{"id": 1, "file_name": "x.jpg"}],
                             [{"id": 78, "image_id": 2, "category_id": 1}]))
    with pytest.raises(DatasetError, match=r"instances_bad\.json: annotation 78 .*unknown image id 2"):
        open_dataset(bad)
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match=r"instances_bad\.json: not valid JSON"):
        open_dataset(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match=r"instances_bad\.json: not a COCO instances file"):
        open_dataset(bad)
    with pytest.raises(DatasetError, match=r"annotations: no instances_train2017\*\.json; available splits: val2014"):
        open_dataset(coco, "train2017")


# ---------------------------------------------------------------- NUS-WIDE
def test_nuswide_layout(nus):
    ds = open_dataset(nus, "TEST")
    assert ds.format == "nuswide" and ds.split == "test"
    assert ds.classes == ["water", "sky", "animal"]  # Concepts81.txt order, not alphabetical
    assert ds.paths == [nus / "Flickr" / "actor" / "0003_5.jpg", nus / "Flickr" / "water" / "0004_6.jpg",
                        nus / "Flickr" / "sky" / "0005_7.jpg"]
    np.testing.assert_array_equal(ds.targets(), [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    train = open_dataset(nus, "train")
    np.testing.assert_array_equal(train.targets(), [[0, 0, 1], [0, 1, 0]])
    (nus / "Concepts81.txt").unlink()
    assert open_dataset(nus, "train").classes == ["animal", "sky", "water"]
    other = open_dataset(nus, "test", images=nus / "imgs")
    assert other.paths[0] == nus / "imgs" / "actor" / "0003_5.jpg"


def test_nuswide_errors(nus):
    (nus / "TrainTestLabels" / "Labels_sky_Test.txt").write_text("0\n1\n")
    with pytest.raises(DatasetError, match=r"Labels_sky_Test\.txt: 2 labels but the image list has 3"):
        open_dataset(nus, "test")
    (nus / "TrainTestLabels" / "Labels_water_Train.txt").write_text("0\n2\n")
    with pytest.raises(DatasetError, match=r"Labels_water_Train\.txt: label '2'"):
        open_dataset(nus, "train")
    (nus / "TrainTestLabels" / "Labels_water_Train.txt").write_text("0\n0\n")
    with pytest.raises(DatasetError, match="use train or test"):
        open_dataset(nus, "val")
    (nus / "TrainTestLabels" / "Labels_animal_Train.txt").unlink()
    with pytest.raises(DatasetError, match=r"Labels_animal_Train\.txt: label file missing"):
        open_dataset(nus, "train")


# ---------------------------------------------------------------- CSV
def test_csv_with_and_without_header(tmp_path):
    body = "img/a.jpg,cat|dog\nimg/b.jpg,\n/abs/c.jpg, dog \n"
    with_header = tmp_path / "h" / "list.csv"
    with_header.parent.mkdir()
    with_header.write_text("path,labels\n" + body)
    plain = tmp_path / "p" / "list.csv"
    plain.parent.mkdir()
    plain.write_text(body)
    for f in (with_header, plain):
        ds = open_dataset(f)
        assert ds.format == "csv" and ds.classes == ["cat", "dog"]
        assert ds.paths == [f.parent / "img/a.jpg", f.parent / "img/b.jpg", Path("/abs/c.jpg")]
        np.testing.assert_array_equal(ds.targets(), [[1, 1], [0, 0], [0, 1]])
    (plain.parent / "classes.txt").write_text("dog\nbird\ncat\n")
    ds = open_dataset(plain, images=tmp_path / "elsewhere")
    assert ds.classes == ["dog", "bird", "cat"]
    assert ds.paths[0] == tmp_path / "elsewhere" / "img/a.jpg"
    np.testing.assert_array_equal(ds.targets(), [[1, 0, 1], [0, 0, 0], [1, 0, 0]])


def test_csv_split_folder_and_errors(tmp_path):
    (tmp_path / "test.csv").write_text("a.jpg,x\n")
    assert open_dataset(tmp_path, "test").classes == ["x"]
    (tmp_path / "classes.txt").write_text("x\n")
    (tmp_path / "bad.csv").write_text("a.jpg,x\nb.jpg,x|y\n")
    with pytest.raises(DatasetError, match=r"bad\.csv:2: unknown label 'y'"):
        open_dataset(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("path,labels\n\n")
    with pytest.raises(DatasetError, match=r"empty\.csv: no image rows"):
        open_dataset(tmp_path / "empty.csv")
    (tmp_path / "cols.csv").write_text("a.jpg,x,y\n")
    with pytest.raises(DatasetError, match=r"cols\.csv:1: 3 columns"):
        open_dataset(tmp_path / "cols.csv")
    (tmp_path / "classes.txt").write_text("\n# nothing\n")
    with pytest.raises(DatasetError, match=r"classes\.txt: class list is empty"):
        open_dataset(tmp_path / "test.csv")


# ---------------------------------------------------------------- detection and override
def test_detect_and_override(tmp_path, voc, coco, nus):
    csv = tmp_path / "l.csv"
    csv.write_text("a.jpg,x\n")
    assert detect_format(voc) == "voc"
    assert detect_format(coco) == "coco"
    assert detect_format(coco / "annotations" / "instances_val2014.json") == "coco"
    assert detect_format(nus) == "nuswide"
    assert detect_format(csv) == "csv"
    # override: a .txt list read as CSV
    txt = tmp_path / "list.txt"
    txt.write_text("a.jpg,x|y\n")
    with pytest.raises(DatasetError, match=r"list\.txt: cannot tell the dataset format"):
        open_dataset(txt)
    assert open_dataset(txt, format="CSV").classes == ["x", "y"]
    with pytest.raises(DatasetError, match=r"l\.csv: not a VOC folder"):
        open_dataset(csv, format="voc")
    with pytest.raises(DatasetError, match=r"unknown dataset format 'yolo'"):
        open_dataset(voc, format="yolo")
    with pytest.raises(DatasetError, match=r"nowhere: dataset path not found"):
        open_dataset(tmp_path / "nowhere")
    devkit = tmp_path / "devkit"
    devkit.mkdir()
    with pytest.raises(DatasetError, match=r"devkit: not a known dataset layout"):
        open_dataset(devkit)
    (voc.parent / "VOCdevkit").mkdir()
    (voc.parent / "VOCdevkit" / "VOC2007").symlink_to(voc)
    with pytest.raises(DatasetError, match=r"did you mean .*VOC2007"):
        open_dataset(voc.parent / "VOCdevkit")
