"""ModelCard: defaults, JSON round-trip, every validation error, save/load."""
from __future__ import annotations

import json

import pytest

from der_deploy import __version__
from der_deploy.artifact.card import FORMAT_VERSION, IMAGENET_MEAN, IMAGENET_STD, ONNX_METADATA_KEY, ModelCard
from der_deploy.errors import CardError, DerError

CLASSES = ["cat", "dog", "car"]


def test_minimal_constructor_and_defaults():
    card = ModelCard(classes=CLASSES, arch="resnet101", input_size=(448, 448))
    assert card.num_classes == 3
    assert card.thresholds == [0.5, 0.5, 0.5]
    assert card.mean == IMAGENET_MEAN and card.std == IMAGENET_STD
    assert card.interpolation == "bilinear" and card.channel_order == "RGB"
    assert card.format_version == FORMAT_VERSION == 1
    assert card.provenance["der_deploy_version"] == __version__
    assert "created" in card.provenance and "data" in card.provenance
    assert ONNX_METADATA_KEY == "der_deploy.card"
    assert ModelCard(classes=CLASSES).input_size == (448, 448)


def test_json_round_trip_keeps_everything():
    card = ModelCard(
        classes=CLASSES, arch="resnet18", input_size=(224, 320), interpolation="bicubic",
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0), channel_order="BGR", thresholds=[0.1, 0.5, 0.9],
        provenance={"data": "voc2007", "created": "2024-01-01T00:00:00+00:00", "der_deploy_version": "x"},
    )
    text = card.to_json()
    data = json.loads(text)
    assert data["input_size"] == [224, 320] and data["classes"] == CLASSES
    back = ModelCard.from_json(text)
    assert back == card
    assert back.input_size == (224, 320) and isinstance(back.input_size, tuple)
    assert ModelCard.from_dict(card.to_dict()) == card
    assert ModelCard.from_json(text.encode()) == card
    # class order is part of the contract
    assert ModelCard.from_json(text).classes == CLASSES


def test_save_and_load(tmp_path):
    card = ModelCard(classes=CLASSES, input_size=(64, 64))
    path = card.save(tmp_path / "sub" / "card.json")
    assert path.exists() and ModelCard.load(path) == card
    assert not [p for p in path.parent.iterdir() if p.name != "card.json"]  # no temp file left


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CardError, match="missing.json"):
        ModelCard.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CardError, match=r"bad\.json: model card is not valid JSON"):
        ModelCard.load(bad)


def good(**changes):
    d = ModelCard(classes=CLASSES, input_size=(32, 32)).to_dict()
    d.update(changes)
    return d


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(format_version=2), "format version 2 is not supported"),
        (dict(thresholds=[0.5, 0.5]), "2 thresholds for 3 classes"),
        (dict(thresholds=[0.5, 0.5, 1.5]), r"thresholds must be probabilities in \[0, 1\]"),
        (dict(thresholds=[0.5, 0.5, float("nan")]), "thresholds must be probabilities"),
        (dict(classes=["cat", "dog", "cat"], thresholds=[0.5] * 3), "duplicate class names: cat"),
        (dict(classes=[], thresholds=[]), "no classes"),
        (dict(interpolation="cubic"), "interpolation 'cubic' is unknown"),
        (dict(channel_order="GBR"), "channel_order 'GBR' is unknown"),
        (dict(std=[0.2, 0.0, 0.2]), "std must be positive"),
        (dict(std=[0.2, -1.0, 0.2]), "std must be positive"),
        (dict(std=[0.2, 0.2]), "std must be three finite numbers"),
        (dict(mean=[0.2, float("inf"), 0.2]), "mean must be three finite numbers"),
        (dict(input_size=[32]), "input_size must be two positive integers"),
        (dict(input_size=[32, 0]), "input_size must be two positive integers"),
        (dict(input_size=[32.5, 32]), "input_size must be two positive integers"),
        (dict(arch=""), "arch must be a non-empty string"),
        (dict(provenance=[1]), "provenance must be a mapping"),
        (dict(colour="red"), "unknown fields: colour"),
    ],
)
def test_validation_errors(changes, match):
    with pytest.raises(CardError, match=match):
        ModelCard.from_dict(good(**changes))


def test_structural_errors():
    d = good()
    del d["format_version"]
    with pytest.raises(CardError, match="no 'format_version'"):
        ModelCard.from_dict(d)
    d = good()
    del d["classes"]
    with pytest.raises(CardError, match="no 'classes'"):
        ModelCard.from_dict(d)
    with pytest.raises(CardError, match="JSON object"):
        ModelCard.from_json("[1, 2]")
    with pytest.raises(CardError, match="not valid JSON"):
        ModelCard.from_json("{")
    with pytest.raises(CardError, match="input_size"):
        ModelCard.from_dict(good(input_size=448))  # a bare number, not (H, W)
    assert issubclass(CardError, DerError)


def test_replace_revalidates():
    card = ModelCard(classes=CLASSES, input_size=(32, 32))
    tuned = card.replace(thresholds=[0.2, 0.3, 0.4])
    assert tuned.thresholds == [0.2, 0.3, 0.4] and card.thresholds == [0.5] * 3
    with pytest.raises(CardError, match="thresholds"):
        card.replace(thresholds=[0.2])
