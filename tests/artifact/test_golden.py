"""The artifact contract pinned by files: tests/golden/*.json are read by the Python readers here and by the C++
readers in runtime/cpp/tests/test_golden.cpp, field by field against literal values. A change to a format that
would break files already written fails here (and there) before it ships."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from der_deploy.artifact import (CARD_KEY, INT8_PLAN_KEY, PRECISION_KEY, ModelCard, onnx_metadata, read_card,
                                 read_sidecar, sidecar_path, variant_paths)
from der_deploy.artifact.keys import BATCH_KEY, TRITON_CARD_PARAM, TRITON_ENGINE_FILE_PARAM

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def test_golden_card_fields():
    card = ModelCard.load(GOLDEN / "card.json")
    assert card.classes == ["cat", "dog", "crème brûlée"]
    assert card.arch == "resnet50"
    assert tuple(card.input_size) == (64, 48)
    assert card.interpolation == "bicubic"
    assert tuple(card.mean) == (0.5, 0.25, 0.125) and tuple(card.std) == (0.25, 0.5, 0.75)
    assert card.channel_order == "BGR"
    assert list(card.thresholds) == [0.25, 0.5, 0.875]
    assert card.format_version == 1
    assert card.provenance["created"] == "2025-01-02T03:04:05+00:00" and card.provenance["epochs"] == 3


def test_golden_card_round_trips_unchanged():
    """Writing what we read gives the same JSON object: no field is dropped, renamed or re-typed."""
    raw = json.loads((GOLDEN / "card.json").read_text(encoding="utf-8"))
    assert json.loads(ModelCard.load(GOLDEN / "card.json").to_json()) == raw


def test_golden_sidecar_fields(tmp_path):
    plan = tmp_path / "der.plan"
    plan.write_bytes(b"not read by read_sidecar")
    sidecar_path(plan).write_bytes((GOLDEN / "sidecar.json").read_bytes())
    sc = read_sidecar(plan)
    assert sc.card == ModelCard.load(GOLDEN / "card.json")
    assert sc.onnx_name == "der.onnx" and sc.onnx_sha256 == "0123456789abcdef" * 4
    assert sc.plan_sha256 == "fedcba9876543210" * 4
    assert (sc.precision, sc.tensorrt_version, sc.gpu_name, sc.compute_capability) == ("fp16", "10.3.0", "NVIDIA A10G", "8.6")
    prof = sc.profile_for("images")
    assert prof["min"] == [1, 3, 64, 48] and prof["opt"] == [8, 3, 64, 48] and prof["max"] == [32, 3, 64, 48]
    assert sc.build_seconds == 12.5 and sc.built_at == "2025-01-02T03:04:05+00:00"
    assert sc.extra == {"workspace_gib": 4, "strongly_typed": False, "builder_flags": ["FP16"]}
    assert json.loads(json.dumps(sc.to_dict())) == json.loads((GOLDEN / "sidecar.json").read_text(encoding="utf-8"))
    assert read_card(plan) == sc.card


def test_metadata_keys_are_the_written_ones(tmp_path):
    """The key strings are part of every file already exported: they must never change."""
    assert (CARD_KEY, PRECISION_KEY, BATCH_KEY, INT8_PLAN_KEY) == (
        "der_deploy.card", "der_deploy.precision", "der_deploy.batch", "der_deploy.int8_plan")
    assert (TRITON_CARD_PARAM, TRITON_ENGINE_FILE_PARAM) == ("der_card", "der_engine_file")
    # An ONNX file carrying the golden card under CARD_KEY is read back by the cheap metadata reader.
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["scores"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph)
    text = (GOLDEN / "card.json").read_text(encoding="utf-8")
    helper.set_model_props(model, {CARD_KEY: text, PRECISION_KEY: "fp16"})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert onnx_metadata(path) == {CARD_KEY: text, PRECISION_KEY: "fp16"}
    assert read_card(path) == ModelCard.load(GOLDEN / "card.json")
    assert np.isclose(read_card(path).thresholds[2], 0.875)


def test_variant_names_are_stable():
    names = variant_paths(Path("out/der.onnx"))
    assert {k: v.name for k, v in names.items()} == {
        "fp32": "der.onnx", "fp16": "der.fp16.onnx", "int8": "der.int8.onnx", "s8s8": "der.int8-s8s8.onnx",
        "plan": "der.plan", "calib": "der.calib.json", "sensitivity": "der.int8-sensitivity.json"}
