"""Budgeted INT8 for OpenVINO (issue 16, item 5) on the trained tiny model: the calibration method kept, the plan's
numbers against an independent evaluation of the written file, the FP32 fallback end to end, the bf16 fallback (which
branches on what this CPU really has: never assumes AMX), and plans written before version 2.

Independent here means: OpenVINO compiled straight from the ``openvino`` package (not der-deploy's runner), the FP32
reference from ONNX Runtime, AP from scikit-learn. Speeds are measured by the search but never asserted.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from sklearn_ref import sklearn_ap, sklearn_map

from der_deploy.artifact.keys import INT8_PLAN_KEY
from der_deploy.cli.export import main as export_main
from der_deploy.datasets import open_dataset
from der_deploy.images import load_and_preprocess, stack
from der_deploy.backends.openvino.core import shared_core  # one Core per process (see there)

pytestmark = pytest.mark.slow
ov = pytest.importorskip("openvino")
CALIB_MAX = 32
METHODS = ("minmax", "percentile", "entropy")


def _ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {k: np.concatenate([sess.run([k], {"images": x[i:i + 32]})[0] for i in range(0, len(x), 32)])
            for k in ("logits", "scores")}


def _ov(path, x, hint="f32"):
    compiled = shared_core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                          "PERFORMANCE_HINT": "LATENCY"})
    request, out = compiled.create_infer_request(), {"logits": [], "scores": []}
    for i in range(0, len(x), 32):
        res = request.infer({"images": x[i:i + 32]})
        for port, value in res.items():
            if port.get_any_name() in out:
                out[port.get_any_name()].append(np.array(value))
    return {k: np.concatenate(v) for k, v in out.items()}


def _summary(out, ref, targets):
    d_ap = (sklearn_ap(out["scores"], targets) - sklearn_ap(ref["scores"], targets)) * 100
    return {"delta_map_pt": (sklearn_map(out["scores"], targets) - sklearn_map(ref["scores"], targets)) * 100,
            "worst_delta_ap_pt": float(np.nanmin(d_ap)), "d_ap": d_ap,
            "logit_err": float(np.mean(np.abs(out["logits"] - ref["logits"])))}


@pytest.fixture(scope="module")
def ov_setup(tiny_onnx, synth_voc, tmp_path_factory):
    """Plain U8S8 files of each calibration method, evaluated on val with OpenVINO FP32 independently."""
    from der_deploy.export.graph import read_onnx_card
    from der_deploy.export.quantize import quantize_int8

    d = tmp_path_factory.mktemp("int8budget-ov")
    src = shutil.copy(tiny_onnx, d / "der.onnx")
    card, calib, cache = read_onnx_card(src), synth_voc / "JPEGImages", d / "der.calib.json"
    ds = open_dataset(synth_voc, "val")
    x, targets = stack([load_and_preprocess(p, card) for p in ds.paths]), ds.targets()
    ref = _ort(src, x)
    plain = {m: quantize_int8(src, d / f"plain.{m}.onnx", calib, calib_max=CALIB_MAX, cache=cache, method=m)
             for m in METHODS}
    indep = {m: _summary(_ov(p, x), ref, targets) for m, p in plain.items()}
    return dict(dir=d, src=src, calib=calib, cache=cache, data=synth_voc, x=x, targets=targets, ref=ref, plain=plain,
                indep=indep)


@pytest.fixture(scope="module")
def ov_plan(ov_setup):
    """The budget search on OpenVINO with FP32 fallback, and the INT8 file written as der-export writes it."""
    from der_deploy.export.int8_budget import Budget, decide
    from der_deploy.export.quantize import quantize_int8

    s = ov_setup
    kept = _expected_method(s["indep"])
    loss = -s["indep"][kept]["worst_delta_ap_pt"]
    assert loss > 0.1, f"plain INT8 ({kept}) on OpenVINO loses only {loss:.2f} pt on its worst class; nothing to budget"
    # Just under that method's loss: its plain file is over the class budget, so the search runs, and a layer or two
    # can fix it (a budget far under it would be rank-swap noise on 140 images).
    budget = Budget(max_map_drop=round(max(0.3, max(-v["delta_map_pt"] for v in s["indep"].values()) + 0.1), 3),
                    max_class_drop=round(0.9 * loss, 3))
    plan = decide(s["src"], s["calib"], data=s["data"], split="val", budget=budget, calib_max=CALIB_MAX,
                  cache=s["cache"], min_speedup=0, target=s["dir"] / "der.int8.onnx", backend="openvino",
                  fallback_precision="fp32", calibration="auto")
    out = quantize_int8(s["src"], s["dir"] / "der.int8.onnx", s["calib"], calib_max=CALIB_MAX, cache=s["cache"],
                        exclude=plan.nodes, plan=plan.to_json())
    return plan, out, budget


def _expected_method(indep):
    """The selection rule, restated: the smallest mean |Δlogit| vs FP32 (OpenVINO checks one file); ties: listed first."""
    return min(METHODS, key=lambda m: indep[m]["logit_err"])


def test_kept_calibration_method_has_the_smallest_independent_error(ov_setup, ov_plan):
    plan, _, _ = ov_plan
    indep = ov_setup["indep"]
    assert plan.calibration["selection"] == "auto" and list(plan.calibration["methods"]) == list(METHODS)
    assert plan.calibration["method"] == _expected_method(indep)
    for m in METHODS:  # what the plan recorded per method is what OpenVINO + scikit-learn measure here
        rec = plan.calibration["methods"][m]
        assert set(rec) == {"u8s8"}  # OpenVINO runs only the U8S8 file
        assert rec["u8s8"]["delta_map_pt"] == pytest.approx(indep[m]["delta_map_pt"], abs=1e-3)
        assert rec["u8s8"]["worst_delta_ap_pt"] == pytest.approx(indep[m]["worst_delta_ap_pt"], abs=1e-3)
        assert rec["u8s8"]["logit_err"] == pytest.approx(indep[m]["logit_err"], rel=1e-3, abs=1e-6)
    # the methods really differ here, so the choice means something
    assert len({round(indep[m]["logit_err"], 5) for m in METHODS}) == 3


def test_plan_numbers_are_an_independent_openvino_evaluation_of_the_written_file(ov_setup, ov_plan):
    plan, out, budget = ov_plan
    assert plan.met and plan.excluded and plan.backend == "openvino" and plan.fallback_precision == "fp32"
    got = _summary(_ov(out, ov_setup["x"]), ov_setup["ref"], ov_setup["targets"])
    assert plan.after["u8s8"]["delta_map_pt"] == pytest.approx(got["delta_map_pt"], abs=1e-3)
    assert plan.after["u8s8"]["worst_delta_ap_pt"] == pytest.approx(got["worst_delta_ap_pt"], abs=1e-3)
    assert got["worst_delta_ap_pt"] >= -budget.max_class_drop - 1e-6
    assert got["delta_map_pt"] >= -budget.max_map_drop - 1e-6
    # the plain file of the kept method was over the budget: the layers kept in FP32 did it
    assert ov_setup["indep"][plan.calibration["method"]]["worst_delta_ap_pt"] < -budget.max_class_drop


def test_fp32_fallback_file_records_the_plan_and_loads_in_both_runtimes(ov_setup, ov_plan):
    from der_deploy.export.int8_budget import PLAN_VERSION, Int8Plan
    from der_deploy.export.quantize import quantize_int8

    plan, out, _ = ov_plan
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    stored = json.loads(meta[INT8_PLAN_KEY])
    assert stored["version"] == PLAN_VERSION == 2
    assert (stored["backend"], stored["fallback_precision"]) == ("openvino", "fp32")
    assert stored["calibration"]["method"] == plan.calibration["method"] and stored["nodes"] == plan.nodes
    assert stored["checked_on"]["u8s8"].startswith("openvino ") and "s8s8" not in stored["checked_on"]
    assert "ov_fp32" in stored["img_s"] and "budgeted" in stored["img_s"]  # measured, reported, not asserted
    assert Int8Plan.from_json(meta[INT8_PLAN_KEY]) == plan
    # the excluded nodes are plain FP32 Convs/Adds in the file, and it carries the kept method's ranges
    g = onnx.load(str(out)).graph
    prod = {o: n for n in g.node for o in n.output}
    for node in (n for n in g.node if n.name in plan.nodes):
        assert all(t not in prod or prod[t].op_type != "QuantizeLinear" for t in node.input)
    other = next(m for m in METHODS if m != plan.calibration["method"])
    again = quantize_int8(ov_setup["src"], ov_setup["dir"] / "other.onnx", ov_setup["calib"], calib_max=CALIB_MAX,
                          cache=ov_setup["cache"], exclude=plan.nodes, method=other)
    assert _scales(out) != _scales(again)
    ort_out, ov_out = _ort(out, ov_setup["x"][:8]), _ov(out, ov_setup["x"][:8])
    assert ort_out["scores"].shape == ov_out["scores"].shape == (8, ov_setup["targets"].shape[1])
    assert np.abs(ort_out["scores"] - ov_out["scores"]).max() < 0.05


def _scales(path):
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i).tobytes() for i in onnx.load(str(path)).graph.initializer
            if "scale" in i.name}


def test_plan_table_shows_backend_fallback_and_every_method(ov_plan):
    from rich.console import Console

    plan, _, _ = ov_plan
    console = Console(record=True, width=400)
    console.print(plan.table())
    text = " ".join(console.export_text().split())  # the title wraps to the table's width
    assert "OpenVINO CPU, INT8 + fp32 fallback" in text and "FP32 (OpenVINO fp32)" in text
    assert f"calibration {plan.calibration['method']}" in text and "(kept)" in text
    for m in METHODS:
        assert f"INT8 plain, {m}" in text
    assert "INT8 budgeted" in text and "S8S8 (TensorRT) not checked" in text


def test_bf16_fallback_follows_what_this_cpu_has(ov_setup, tmp_path):
    from der_deploy.backends.openvino.cpu import native_precisions, openvino_capabilities
    from der_deploy.errors import BackendUnavailable
    from der_deploy.export.int8_budget import Budget, plan_int8

    s = ov_setup
    if "bf16" not in native_precisions(openvino_capabilities()):  # e.g. AVX2-only or AVX-512 without BF16
        out = tmp_path / "out"
        out.mkdir()
        res = CliRunner().invoke(export_main, [
            str(s["src"]), "-o", str(out / "der.onnx"), "--int8", "--calib", str(s["calib"]), "--budget-data",
            str(s["data"]), "--budget-backend", "openvino", "--budget-fallback-precision", "bf16"])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --budget-fallback-precision bf16: ")
        assert "use --budget-fallback-precision fp32" in lines[0] and "BF16" in lines[0]
        assert list(out.iterdir()) == []  # refused before any work
        with pytest.raises(BackendUnavailable, match="--budget-fallback-precision bf16"):
            plan_int8(s["src"], s["calib"], data=s["data"], cache=tmp_path / "c.json", backend="openvino",
                      fallback_precision="bf16")
        assert not (tmp_path / "c.json").exists()
        return
    # A CPU with native BF16: the plan runs, and records and checks bf16 (loose budget: plain INT8 meets it).
    plan = plan_int8(s["src"], s["calib"], data=s["data"], cache=s["cache"], calib_max=CALIB_MAX,
                     budget=Budget(100, 100), min_speedup=0, backend="openvino", fallback_precision="bf16",
                     calibration="minmax")
    assert plan.fallback_precision == "bf16" and plan.checked_on["u8s8"].endswith(" bf16")
    assert {"ov_fp32", "ov_bf16", "int8"} <= set(plan.img_s)
    got = _summary(_ov(s["plain"]["minmax"], s["x"], "bf16"), s["ref"], s["targets"])
    assert plan.before["u8s8"]["worst_delta_ap_pt"] == pytest.approx(got["worst_delta_ap_pt"], abs=1e-3)


def test_explicit_method_skips_the_selection_on_ort(ov_setup):
    from der_deploy.export.int8_budget import Budget, plan_int8

    s = ov_setup
    plan = plan_int8(s["src"], s["calib"], data=s["data"], cache=s["cache"], calib_max=CALIB_MAX,
                     budget=Budget(100, 100), min_speedup=0, calibration="entropy")
    assert plan.met and not plan.excluded and plan.backend == "ort"
    assert plan.calibration["method"] == "entropy" and plan.calibration["selection"] == "given"
    assert list(plan.calibration["methods"]) == ["entropy"] and set(plan.before) == {"u8s8", "s8s8"}
    got = _summary(_ort(s["plain"]["entropy"], s["x"]), s["ref"], s["targets"])
    assert plan.before["u8s8"]["worst_delta_ap_pt"] == pytest.approx(got["worst_delta_ap_pt"], abs=1e-3)


def test_plans_before_version_2_still_read(ov_plan):
    from der_deploy.cli.eval import _show_plan
    from der_deploy.errors import DerError
    from der_deploy.export.int8_budget import Int8Plan
    from der_deploy.tools.bench import plan_note

    v1 = {"budget": {"max_map_drop": 0.3, "max_class_drop": 0.5}, "data": "voc/val", "images": 140,
          "granularity": "layer", "excluded": ["layer4.1.add"], "nodes": ["node_add_60", "node_relu_61"],
          "before": {"u8s8": {"delta_map_pt": -0.5, "worst_class": "ring", "worst_delta_ap_pt": -2.1, "logit_err": 0.04},
                     "s8s8": {"delta_map_pt": -0.4, "worst_class": "ring", "worst_delta_ap_pt": -1.9, "logit_err": 0.05}},
          "after": {"u8s8": {"delta_map_pt": -0.1, "worst_class": "ring", "worst_delta_ap_pt": -0.4, "logit_err": 0.02},
                    "s8s8": {"delta_map_pt": -0.2, "worst_class": "ring", "worst_delta_ap_pt": -0.45, "logit_err": 0.03}},
          "img_s": {"fp32": 100.0, "int8": 380.0, "budgeted": 300.0}, "excluded_macs": 0.05, "search_s": 30.0,
          "sets_evaluated": 12, "met": True, "sensitivity": [], "version": 1, "s8s8_excluded_precision": "fp16"}
    old = Int8Plan.from_json(json.dumps(v1))
    assert (old.backend, old.fallback_precision, old.calibration["method"]) == ("ort", "fp32", "minmax")
    assert old.excluded == ["layer4.1.add"] and old.speedup("budgeted") == pytest.approx(3.0)
    assert set(old.checked_on) == {"u8s8", "s8s8"}
    old.table()  # renders
    with pytest.raises(DerError, match="newer than this der-deploy reads"):
        Int8Plan.from_json({**v1, "version": 99})
    # and the readers of the plan in other commands take the new version
    new = json.loads(ov_plan[0].to_json())
    _show_plan(new)
    note = plan_note_of(plan_note, new)
    assert "INT8 plan" in note and f"checked on OpenVINO with fp32 fallback, {new['calibration']['method']}" in note
    assert plan_note_of(plan_note, v1).endswith("checked on ONNX Runtime, minmax calibration")


def plan_note_of(plan_note, plan):
    import tempfile
    from pathlib import Path

    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    entry = model.metadata_props.add()
    entry.key, entry.value = INT8_PLAN_KEY, json.dumps(plan)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.onnx"
        onnx.save(model, str(path))
        return plan_note(path)


def test_der_export_budget_on_openvino_end_to_end(ov_setup, tmp_path):
    """The CLI path: der-export --budget-backend openvino passes the backend and method through to the search,
    writes the U8S8 file with a v2 plan saying so, and no S8S8 file (OpenVINO's budget never checked one)."""
    from der_deploy.export.int8_budget import Int8Plan

    s = ov_setup
    out = tmp_path / "der.onnx"
    shutil.copy(s["src"], out)
    args = [str(out), "--int8", "--calib", str(s["calib"]), "--calib-max", str(CALIB_MAX), "--budget-data",
            str(s["data"]), "--budget-backend", "openvino", "--calibration-method", "percentile", "--min-speedup", "0",
            "--max-class-drop", "100", "--max-map-drop", "100"]
    res = CliRunner().invoke(export_main, args)
    assert res.exit_code == 0, res.output
    plan = Int8Plan.from_json(_meta_plan(out.with_name("der.int8.onnx")))
    assert plan.backend == "openvino" and plan.fallback_precision == "fp32"
    assert plan.calibration["method"] == "percentile"
    assert not out.with_name("der.int8-s8s8.onnx").exists()
    res = CliRunner().invoke(export_main, [*args, "--trt"])
    assert res.exit_code == 2 and "for a TensorRT engine use --budget-backend ort" in res.output


def _meta_plan(path):
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}[INT8_PLAN_KEY]
