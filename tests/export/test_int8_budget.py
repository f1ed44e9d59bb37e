"""Budgeted INT8 on the trained tiny model: sensitivity, the FP fallback search, the refusal, and the S8S8 graph.

The budget is chosen from the plain INT8 files' own numbers, measured here independently of the search code
(ONNX Runtime + der_deploy.metrics, whose AP is checked against scikit-learn in tests/core).
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from der_deploy import metrics
from der_deploy.cli.export import main as export_main
from der_deploy.datasets import open_dataset
from der_deploy.errors import ExportError
from der_deploy.images import load_and_preprocess, stack

pytestmark = pytest.mark.slow
CALIB_MAX = 32
from der_deploy.artifact.keys import INT8_PLAN_KEY as PLAN_KEY


def _split(data, card, split="val"):
    ds = open_dataset(data, split)
    return stack([load_and_preprocess(p, card) for p in ds.paths]), ds.targets()


def _scores(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["scores"], {"images": x[i:i + 16]})[0] for i in range(0, len(x), 16)])


def _drops(path, fp32_scores, x, targets):
    """(ΔmAP, per-class ΔAP) in points of ``path`` vs the FP32 scores, straight from ORT + metrics."""
    s = _scores(path, x)
    d_ap = (metrics.average_precision(s, targets) - metrics.average_precision(fp32_scores, targets)) * 100
    d_map = (metrics.mean_average_precision(s, targets) - metrics.mean_average_precision(fp32_scores, targets)) * 100
    return d_map, d_ap


@pytest.fixture(scope="module")
def setup(tiny_onnx, synth_voc, tmp_path_factory):
    """The FP32 file, its calibration cache, plain U8S8/S8S8 files and their measured drops on val."""
    from der_deploy.export.graph import read_onnx_card
    from der_deploy.export.quantize import quantize_int8

    d = tmp_path_factory.mktemp("int8budget")
    src = shutil.copy(tiny_onnx, d / "der.onnx")
    card = read_onnx_card(src)
    calib = synth_voc / "JPEGImages"
    plain = {s: quantize_int8(src, d / f"plain.{s}.onnx", calib, scheme=s, calib_max=CALIB_MAX, cache=d / "der.calib.json")
             for s in ("u8s8", "s8s8")}
    x, targets = _split(synth_voc, card)
    fp32 = _scores(src, x)
    drops = {s: _drops(p, fp32, x, targets) for s, p in plain.items()}
    return dict(dir=d, src=src, calib=calib, cache=d / "der.calib.json", plain=plain, x=x, targets=targets, fp32=fp32,
                drops=drops, card=card)


def test_sensitivity_is_deterministic_and_reuses_the_calibration(setup, synth_voc):
    from der_deploy.export.graph import load_onnx
    from der_deploy.export.sensitivity import load_split, measure_sensitivity, quant_units

    units, gran = quant_units(load_onnx(setup["src"]))
    assert gran == "layer"  # resnet18: 20 Convs + 8 residual Adds
    assert len(units) == 28 and {"stem.conv1", "layer4.1.add", "layer2.0.downsample.0"} <= {u.name for u in units}
    blocks, _ = quant_units(load_onnx(setup["src"]), "block")
    assert [u.name for u in blocks] == ["stem"] + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert sum(u.macs for u in blocks) == sum(u.macs for u in units)
    some = units[::7]  # 4 units keep the two runs short
    split = load_split(setup["src"], synth_voc, "val")
    stamp = os.stat(setup["cache"]).st_mtime_ns
    runs = [measure_sensitivity(setup["src"], setup["calib"], split, some, cache=setup["cache"], calib_max=CALIB_MAX)
            for _ in range(2)]
    assert os.stat(setup["cache"]).st_mtime_ns == stamp  # never re-calibrated per candidate
    names = [[r.unit.name for r in run] for run in runs]
    assert names[0] == names[1] and sorted(names[0]) == sorted(u.name for u in some)
    for a, b in zip(*runs):
        for s in ("u8s8", "s8s8"):
            assert a.effects[s].logit_err == b.effects[s].logit_err
            np.testing.assert_array_equal(a.effects[s].delta_ap_pt, b.effects[s].delta_ap_pt)
    proxies = [r.proxy for r in runs[0]]
    assert proxies == sorted(proxies, reverse=True) and proxies[0] > 0
    # one unit alone moves the logits less than the whole plain INT8 model does
    plain_err = float(np.mean(np.abs(_logits(setup["plain"]["u8s8"], split.images) - split.ref_logits)))
    assert runs[0][0].effects["u8s8"].logit_err < plain_err


def _logits(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["logits"], {"images": x[i:i + 16]})[0] for i in range(0, len(x), 16)])


def test_stale_cache_is_an_error_not_a_recalibration(setup, tmp_path):
    from der_deploy.export.quantize import quantize_int8

    with pytest.raises(ExportError, match="calibration ranges missing or stale"):
        quantize_int8(setup["src"], tmp_path / "x.onnx", setup["calib"], calib_max=CALIB_MAX, cache=tmp_path / "none.json",
                      require_cached=True)


def _export(setup, out, *extra, reuse=None):
    out.mkdir()
    model = shutil.copy(setup["src"], out / "der.onnx")
    shutil.copy(setup["cache"], out / "der.calib.json")  # same FP32 bytes + images: a cache hit
    if reuse is not None:  # the sensitivity of an earlier run on the same data and ranges
        shutil.copy(reuse / "der.int8-sensitivity.json", out / "der.int8-sensitivity.json")
    # minmax pinned: these tests are about the layer search from the plain files measured in `setup`
    args = [str(model), "--int8", "--calib", str(setup["calib"]), "--calib-max", str(CALIB_MAX), "--budget-data",
            str(setup["data"]), "--split", "val", "--calibration-method", "minmax", *extra]
    return CliRunner().invoke(export_main, args, catch_exceptions=False), out


@pytest.fixture(scope="module")
def budgeted(setup, synth_voc):
    setup["data"] = synth_voc
    worst_plain = max(-setup["drops"][s][1].min() for s in ("u8s8", "s8s8"))
    map_plain = max(-setup["drops"][s][0] for s in ("u8s8", "s8s8"))
    assert worst_plain > 0.3, f"plain INT8 loses only {worst_plain:.2f} pt on its worst class; nothing to budget"
    budget = round(0.6 * worst_plain, 3)  # the plain files violate it by construction
    res, out = _export(setup, setup["dir"] / "budgeted", "--max-class-drop", str(budget),
                       "--max-map-drop", str(round(max(map_plain, 0.05), 3)), "--min-speedup", "0")
    return res, out, budget


def test_budgeted_export_meets_the_budget_the_plain_files_violate(setup, budgeted):
    res, out, budget = budgeted
    assert res.exit_code == 0, res.output
    assert max(-setup["drops"][s][1].min() for s in ("u8s8", "s8s8")) > budget  # a plain file is over it
    plan = json.loads(_meta(out / "der.int8.onnx")[PLAN_KEY])
    assert plan["excluded"] and plan["met"] and plan["budget"]["max_class_drop"] == budget
    assert plan["version"] == 2 and plan["backend"] == "ort" and plan["fallback_precision"] == "fp32"
    assert plan["calibration"]["method"] == "minmax" and set(plan["checked_on"]) == {"u8s8", "s8s8"}
    assert json.loads(_meta(out / "der.int8-s8s8.onnx")[PLAN_KEY])["nodes"] == plan["nodes"]
    for name in plan["excluded"]:
        assert name in res.output  # the decision table names the layers kept in floating point
    assert "INT8 plain" in res.output and "INT8 budgeted" in res.output
    for f in ("der.int8.onnx", "der.int8-s8s8.onnx"):  # re-measured here, not taken from the plan
        d_map, d_ap = _drops(out / f, setup["fp32"], setup["x"], setup["targets"])
        assert d_ap.min() >= -budget - 1e-6, (f, d_ap)
        assert d_map >= -plan["budget"]["max_map_drop"] - 1e-6


def test_s8s8_file_carries_the_same_exclusions(setup, budgeted):
    from der_deploy.export.graph import load_onnx
    from der_deploy.export.quantize import quantize_int8
    from der_deploy.export.sensitivity import quant_units

    _, out, _ = budgeted
    plan = json.loads(_meta(out / "der.int8.onnx")[PLAN_KEY])
    for path, half in ((out / "der.int8-s8s8.onnx", True), (out / "der.int8.onnx", False)):
        _check_kept_in_fp(path, plan["nodes"], half)
    # What the search keeps depends on the trained model (one residual Add was enough on one training of it), so a
    # Conv unit is also kept in FP here directly, the way the plan's files are written.
    conv = next(u for u in quant_units(load_onnx(setup["src"]))[0] if u.name == "layer4.1.conv2")
    for scheme, half in (("s8s8", True), ("u8s8", False)):
        path = quantize_int8(setup["src"], setup["dir"] / f"conv-kept.{scheme}.onnx", setup["calib"], scheme=scheme,
                             calib_max=CALIB_MAX, cache=setup["cache"], exclude=conv.nodes, half_excluded=half,
                             require_cached=True)
        _check_kept_in_fp(path, conv.nodes, half)
    convs = [n for n in (*plan["nodes"], *conv.nodes) if "Conv" in n]
    assert convs
    plain = onnx.load(str(setup["plain"]["s8s8"])).graph  # while the plain S8S8 file quantizes those same Convs
    prod = {o: n for n in plain.node for o in n.output}
    for n in plain.node:
        if n.name in convs:
            assert prod[n.input[1]].op_type == "DequantizeLinear"
            assert prod[n.input[0]].op_type == "DequantizeLinear"


def _check_kept_in_fp(path, names, half):
    g = onnx.load(str(path)).graph
    prod = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    nodes = {n.name: n for n in g.node}
    for name in names:
        node = nodes[name]
        for t in node.input:  # no Q feeds it and its weights are not dequantized int8
            assert t not in prod or prod[t].op_type != "QuantizeLinear", f"{path.name}: {name} reads a Q"
        if node.op_type == "Conv":
            w = node.input[1]
            assert w in inits and w not in prod, f"{path.name}: {name} weight comes from {prod.get(w)}"
            want = onnx.TensorProto.FLOAT16 if half else onnx.TensorProto.FLOAT
            assert inits[w].data_type == want


def test_impossible_budget_is_refused_and_writes_no_int8_file(setup, budgeted):
    _, done, _ = budgeted
    res, out = _export(setup, setup["dir"] / "impossible", "--max-class-drop", "0", "--max-map-drop", "0",
                       "--min-speedup", "1.1", reuse=done)
    assert res.exit_code == 1, res.output
    assert "measuring the sensitivity" not in res.output  # reused: same ranges, same split, same units
    assert "error: " in res.output and "no INT8 plan keeps" in res.output and "No INT8 file was written" in res.output
    assert not (out / "der.int8.onnx").exists() and not (out / "der.int8-s8s8.onnx").exists()
    assert (out / "der.onnx").exists()


def test_budget_needs_int8():
    res = CliRunner().invoke(export_main, ["x.pt", "--budget-data", "."])
    assert res.exit_code == 2 and "--budget-data sets an INT8 accuracy budget" in res.output


def _meta(path):
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_budget_backend_options_are_checked_before_any_work(tmp_path):
    base = ["x.onnx", "--int8", "--calib", str(tmp_path), "-o", str(tmp_path / "der.onnx")]
    res = CliRunner().invoke(export_main, [*base, "--budget-data", str(tmp_path), "--budget-fallback-precision", "bf16"])
    assert res.exit_code == 2 and "--budget-fallback-precision bf16 needs --budget-backend openvino" in res.output
    res = CliRunner().invoke(export_main, [*base, "--budget-backend", "openvino"])
    assert res.exit_code == 2 and "add --budget-data DATA" in res.output
    res = CliRunner().invoke(export_main, [*base, "--calibration-method", "entropy"])
    assert res.exit_code == 2 and "add --budget-data DATA" in res.output
    assert list(tmp_path.iterdir()) == []


def test_minmax_ranges_are_the_ones_quantize_static_computes_itself(setup, tmp_path):
    """der.calib.json files written before the calibration methods existed stay valid: same key, same ranges."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from der_deploy.export.calibration import CalibrationReader, calibration_images, calibration_key

    paths = calibration_images(setup["calib"], CALIB_MAX)
    quantize_static(str(setup["src"]), str(tmp_path / "q.onnx"), CalibrationReader(paths, setup["card"]),
                    quant_format=QuantFormat.QDQ, calibrate_method=CalibrationMethod.MinMax,
                    calibration_cache_path=str(tmp_path / "own.json"))
    ours = json.loads(setup["cache"].read_text())
    assert ours["data"] == json.loads((tmp_path / "own.json").read_text())["data"]
    assert ours["der_deploy"]["key"] == calibration_key(setup["src"], paths, setup["card"])


def test_each_method_has_its_own_cache_and_the_plan_decides_the_method(setup, tmp_path):
    from der_deploy.errors import DerError
    from der_deploy.export.calibration import method_cache
    from der_deploy.export.quantize import quantize_int8

    cache = tmp_path / "der.calib.json"
    shutil.copy(setup["cache"], cache)
    stamp = os.stat(cache).st_mtime_ns
    with pytest.raises(ExportError, match="calibration ranges missing or stale"):
        quantize_int8(setup["src"], tmp_path / "p.onnx", setup["calib"], calib_max=CALIB_MAX, cache=cache,
                      method="percentile", require_cached=True)
    pct = quantize_int8(setup["src"], tmp_path / "p.onnx", setup["calib"], calib_max=CALIB_MAX, cache=cache,
                        method="percentile")
    stored = json.loads(method_cache(cache, "percentile").read_text())
    assert method_cache(cache, "percentile").name == "der.calib-percentile.json"
    assert stored["calibration_method"]["value"] == "CalibrationMethod.Percentile"
    assert os.stat(cache).st_mtime_ns == stamp  # the minmax cache is left alone
    # percentile cuts the tails: some activation range is strictly inside minmax's
    from onnxruntime.quantization.calibrate import load_tensors_data

    minmax, pcts = (load_tensors_data(c).data for c in (cache, method_cache(cache, "percentile")))
    assert set(minmax) == set(pcts)
    assert any(float(np.ravel(pcts[k].range_value[1])[0]) < float(np.ravel(minmax[k].range_value[1])[0]) - 1e-6
               for k in minmax)
    # a plan that records percentile makes quantize_int8 use its ranges, without being told the method
    plan = json.dumps({"calibration": {"method": "percentile"}})
    planned = quantize_int8(setup["src"], tmp_path / "planned.onnx", setup["calib"], calib_max=CALIB_MAX, cache=cache,
                            plan=plan)
    assert _inits(planned) == _inits(pct) and _inits(planned) != _inits(setup["plain"]["u8s8"])
    with pytest.raises(DerError, match="contradicts the INT8 plan"):
        quantize_int8(setup["src"], tmp_path / "x.onnx", setup["calib"], calib_max=CALIB_MAX, cache=cache, plan=plan,
                      method="minmax")


def _inits(path):
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i).tobytes() for i in onnx.load(str(path)).graph.initializer
            if "scale" in i.name}
