"""der-eval --max-class-drop on the trained tiny model: the worst class's AP drop vs scikit-learn, the CI gate
(exit 1 over budget, 0 within), and the INT8 plan line for a budgeted export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn_ref import sklearn_ap

from der_deploy.tools.evaluate import evaluate

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def int8(tiny_onnx, synth_voc, tmp_path_factory):
    from der_deploy.export.quantize import quantize_int8

    out = tmp_path_factory.mktemp("classbudget")
    return quantize_int8(tiny_onnx, out / "tiny.int8.onnx", synth_voc / "JPEGImages", scheme="s8s8", calib_max=32)


@pytest.fixture(scope="module")
def drop(int8, synth_voc, trained_ckpt):
    """The engine's largest per-class AP drop vs PyTorch, computed with scikit-learn on der-eval's scores."""
    from der_deploy.tools.evaluate import collect

    card, probs, ref, targets = collect(int8, synth_voc, split="val", reference=trained_ckpt)
    delta = (sklearn_ap(probs, targets) - sklearn_ap(ref, targets)) * 100
    worst = int(np.nanargmin(delta))
    return card.classes[worst], float(delta[worst])


def test_largest_class_drop_matches_sklearn(int8, synth_voc, trained_ckpt, drop):
    report = evaluate(int8, synth_voc, split="val", reference=trained_ckpt, max_class_drop=5.0)
    p = report.parity
    assert p.drop_class == drop[0]
    assert p.drop_pt == pytest.approx(min(drop[1], 0.0), abs=1e-9)
    assert p.class_passed == (p.drop_pt >= -5.0)


def _eval(engine, data, ckpt, *extra):
    return subprocess.run([str(BIN / "der-eval"), "--engine", str(engine), str(data), "--split", "val", "--reference",
                           str(ckpt), *extra], capture_output=True, text=True, env={**os.environ, "DER_NO_PROGRESS": "1", "COLUMNS": "250"})


def test_cli_gates_on_the_class_budget(int8, synth_voc, trained_ckpt, drop):
    name, d = drop
    assert d < -0.05, f"the S8S8 file loses only {d:.3f} pt on its worst class; no gate to test"
    over = _eval(int8, synth_voc, trained_ckpt, "--max-class-drop", f"{-d * 0.5:.4f}", "--budget", "int8=100")
    assert over.returncode == 1, over.stdout + over.stderr
    assert f"class {name!r} lost" in over.stderr and "--max-class-drop" in over.stderr
    assert name in over.stdout and "FAIL" in over.stdout and "largest class drop" in over.stdout
    within = _eval(int8, synth_voc, trained_ckpt, "--max-class-drop", f"{-d * 2:.4f}", "--budget", "int8=100")
    assert within.returncode == 0, within.stdout + within.stderr
    assert "PASS" in within.stdout


def test_class_budget_needs_a_reference(int8, synth_voc):
    res = subprocess.run([str(BIN / "der-eval"), "--engine", str(int8), str(synth_voc), "--max-class-drop", "1"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "add --reference" in res.stderr


def test_int8_plan_is_shown(int8, synth_voc, trained_ckpt, tmp_path):
    plan = {"budget": {"max_map_drop": 0.3, "max_class_drop": 0.5}, "data": "voc/val", "granularity": "layer",
            "excluded": ["layer4.1.add", "layer4.1.conv2"], "after": {"u8s8": {"delta_map_pt": -0.1, "worst_class": "ring",
                                                                                "worst_delta_ap_pt": -0.4}}}
    model = onnx.load(str(int8))
    entry = model.metadata_props.add()
    entry.key, entry.value = "der_deploy.int8_plan", json.dumps(plan)
    onnx.save(model, str(tmp_path / "planned.onnx"))
    res = _eval(tmp_path / "planned.onnx", synth_voc, trained_ckpt, "--budget", "int8=100", "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    assert "INT8 plan" in res.stdout and "layer4.1.add, layer4.1.conv2" in res.stdout
    assert json.loads((tmp_path / "r.json").read_text())["int8_plan"]["excluded"] == plan["excluded"]
