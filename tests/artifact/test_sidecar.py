"""The ``<plan>.json`` sidecar: round trip, every validation error, and the portability check."""
from __future__ import annotations

import json

import pytest

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import EngineError
from der_deploy.artifact.sidecar import Sidecar, check_compatible, read_sidecar, sidecar_path, write_sidecar

SHA = "ab" * 32


def make_sidecar(**changes) -> Sidecar:
    base = dict(
        card=ModelCard(classes=["cat", "dog", "car"], arch="resnet18", input_size=(64, 64)),
        onnx_sha256=SHA, tensorrt_version="10.9.0.34", gpu_name="NVIDIA A10G", compute_capability="8.6",
        precision="fp16", profiles=[{"input": "images", "min": [1, 3, 64, 64], "opt": [8, 3, 64, 64], "max": [32, 3, 64, 64]}],
        build_seconds=12.5, built_at="2026-01-01T00:00:00+00:00", der_deploy_version="0.1.0", plan_sha256="cd" * 32,
        onnx_name="model.fp16.onnx",
    )
    base.update(changes)
    return Sidecar(**base)


def test_sidecar_path_appends_json(tmp_path):
    assert sidecar_path(tmp_path / "der.plan") == tmp_path / "der.plan.json"
    assert sidecar_path("x/model.engine").name == "model.engine.json"


def test_round_trip(tmp_path):
    plan = tmp_path / "der.plan"
    plan.write_bytes(b"plan")
    sc = make_sidecar()
    path = write_sidecar(plan, sc)
    assert path == tmp_path / "der.plan.json"
    back = read_sidecar(plan)
    assert back == sc
    assert back.card.classes == ["cat", "dog", "car"] and back.card.input_size == (64, 64)
    assert back.profile_for("images")["max"] == [32, 3, 64, 64]
    assert back.profile_for("other") is None
    raw = json.loads(path.read_text())
    assert raw["format"] == "der-deploy.tensorrt-plan" and raw["format_version"] == 1
    # no temp files left behind by the atomic write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["der.plan", "der.plan.json"]


def test_missing_sidecar_names_file_and_fix(tmp_path):
    plan = tmp_path / "der.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(EngineError) as info:
        read_sidecar(plan)
    msg = str(info.value)
    assert "der.plan.json" in msg and "rebuild with der-export --trt" in msg and "\n" not in msg


def test_malformed_json(tmp_path):
    plan = tmp_path / "der.plan"
    (tmp_path / "der.plan.json").write_text("{not json")
    with pytest.raises(EngineError, match="not valid JSON.*der-export --trt"):
        read_sidecar(plan)


def _write_raw(tmp_path, data) -> object:
    plan = tmp_path / "der.plan"
    (tmp_path / "der.plan.json").write_text(json.dumps(data))
    return plan


@pytest.mark.parametrize("mutate, pattern", [
    (lambda d: d.pop("tensorrt_version"), "missing field.*tensorrt_version"),
    (lambda d: d.pop("card"), "missing field.*card"),
    (lambda d: d.update(format="something-else"), "not a der-deploy TensorRT sidecar"),
    (lambda d: d.update(format_version=7), "format version 7"),
    (lambda d: d.update(compute_capability="sm_86"), "compute_capability"),
    (lambda d: d.update(compute_capability=8.6), "compute_capability"),
    (lambda d: d.update(precision="bf16"), "precision"),
    (lambda d: d.update(onnx_sha256="xyz"), "onnx_sha256"),
    (lambda d: d.update(plan_sha256=12), "plan_sha256"),
    (lambda d: d.update(gpu_name=""), "gpu_name"),
    (lambda d: d.update(build_seconds=-1), "build_seconds"),
    (lambda d: d.update(build_seconds=True), "build_seconds"),
    (lambda d: d.update(profiles=[]), "profiles"),
    (lambda d: d.update(profiles=[{"input": "images", "min": [1, 3], "opt": [2, 3], "max": [1, 3]}]), "min <= opt <= max"),
    (lambda d: d.update(profiles=[{"input": "images", "min": [1, 3], "opt": [2, 3, 4], "max": [4, 3]}]), "ranks"),
    (lambda d: d.update(profiles=[{"input": "images", "min": [0, 3], "opt": [2, 3], "max": [4, 3]}]), "positive integers"),
    (lambda d: d.update(profiles=[{"min": [1], "opt": [1], "max": [1]}]), "'input' name"),
    (lambda d: d["card"].update(classes=[]), "bad model card"),
    (lambda d: d["card"].update(bogus=1), "bad model card.*bogus"),
    (lambda d: d.update(extra=[1]), "extra"),
])
def test_every_validation_error(tmp_path, mutate, pattern):
    data = make_sidecar().to_dict()
    mutate(data)
    plan = _write_raw(tmp_path, data)
    with pytest.raises(EngineError, match=pattern) as info:
        read_sidecar(plan)
    assert "der.plan.json" in str(info.value) and "der-export --trt" in str(info.value)


def test_not_an_object(tmp_path):
    with pytest.raises(EngineError, match="JSON object"):
        read_sidecar(_write_raw(tmp_path, [1, 2]))


def test_optional_fields_may_be_absent(tmp_path):
    data = make_sidecar().to_dict()
    for key in ("plan_sha256", "onnx_name", "extra"):
        data.pop(key)
    back = read_sidecar(_write_raw(tmp_path, data))
    assert back.plan_sha256 is None and back.onnx_name == "" and back.extra == {}


# --- portability ------------------------------------------------------------------------------
def test_compatible_same_machine_has_no_warnings():
    assert check_compatible(make_sidecar(), "10.9.0.34", "NVIDIA A10G", "8.6") == []


def test_tensorrt_version_mismatch_refuses_with_rebuild_hint():
    with pytest.raises(EngineError) as info:
        check_compatible(make_sidecar(), "10.9.0.35", "NVIDIA A10G", "8.6", plan="out/der.plan")
    assert str(info.value) == (
        "der.plan was built with TensorRT 10.9.0.34 on NVIDIA A10G (sm_86); this machine has TensorRT 10.9.0.35 "
        "on NVIDIA A10G (sm_86); rebuild it from the ONNX: der-export model.fp16.onnx --trt"
    )


def test_major_version_mismatch_refuses():
    with pytest.raises(EngineError, match="TensorRT 10.9.0.34 .* TensorRT 11.4.1"):
        check_compatible(make_sidecar(), "11.4.1", "NVIDIA A10G", "8.6")


def test_compute_capability_mismatch_refuses():
    with pytest.raises(EngineError) as info:
        check_compatible(make_sidecar(), "10.9.0.34", "NVIDIA H100 80GB HBM3", "9.0")
    msg = str(info.value)
    assert "(sm_86)" in msg and "NVIDIA H100 80GB HBM3 (sm_90)" in msg and "der-export model.fp16.onnx --trt" in msg


def test_other_gpu_model_same_cc_is_a_warning():
    warnings = check_compatible(make_sidecar(), "10.9.0.34", "NVIDIA RTX A5000", "8.6")
    assert len(warnings) == 1 and "NVIDIA A10G" in warnings[0] and "NVIDIA RTX A5000" in warnings[0]


def test_sidecar_module_is_light():
    import subprocess
    import sys

    code = ("import sys; import der_deploy.artifact.sidecar, der_deploy.backends.tensorrt.runner, der_deploy.backends.tensorrt.cuda; "
            "bad = [m for m in ('torch', 'tensorrt', 'cuda.bindings', 'cuda.cudart') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tuned_plan_copy_changes_only_the_card(tmp_path):
    """der-eval --tune-thresholds on a .plan: the plan is copied byte for byte, the sidecar differs only in the card."""
    from der_deploy.runtime.thresholds import copy_plan_with_card

    plan = tmp_path / "der.plan"
    plan.write_bytes(b"\x00plan-bytes\xff" * 10)
    old = make_sidecar()
    write_sidecar(plan, old)
    tuned = old.card.replace(thresholds=[0.3, 0.6, 0.9])
    out = copy_plan_with_card(plan, tmp_path / "der.tuned.plan", tuned)
    assert out.read_bytes() == plan.read_bytes()
    new = read_sidecar(out)
    assert new.card.thresholds == [0.3, 0.6, 0.9]
    assert {**new.to_dict(), "card": None} == {**old.to_dict(), "card": None}
    sidecar_path(plan).unlink()
    with pytest.raises(EngineError, match="der.plan.json"):
        copy_plan_with_card(plan, tmp_path / "x.plan", tuned)
    assert not (tmp_path / "x.plan").exists()  # nothing written when the source sidecar is missing
