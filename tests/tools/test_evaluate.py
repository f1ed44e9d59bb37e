"""der-eval on the trained tiny model: metrics vs scikit-learn, the parity gate per precision, threshold tuning."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn_ref import sklearn_map

from der_deploy.errors import DerError
from der_deploy.artifact import read_card
from der_deploy.tools.evaluate import DEFAULT_BUDGETS, engine_precision, evaluate

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def torch_probs(trained_ckpt, synth_voc):
    """The checkpoint's probabilities on the test split, computed independently of der-eval."""
    import torch

    from der_deploy.datasets import open_dataset
    from der_deploy.images import load_and_preprocess, stack
    from der_deploy.train.checkpoint import load_checkpoint

    model, card = load_checkpoint(trained_ckpt)
    ds = open_dataset(synth_voc, "test")
    x = stack([load_and_preprocess(p, card) for p in ds.paths])
    with torch.inference_mode():
        probs = torch.sigmoid(model(torch.from_numpy(x)).logits).numpy()
    return probs, ds.targets()


def test_fp32_metrics_match_sklearn_and_pytorch(tiny_onnx, synth_voc, trained_ckpt, torch_probs):
    probs, targets = torch_probs
    report = evaluate(tiny_onnx, synth_voc, split="test", reference=trained_ckpt, batch_size=5)
    assert report.precision == "fp32"
    assert report.num_images == len(targets)
    assert report.parity.reference_map == pytest.approx(sklearn_map(probs, targets), abs=1e-9)
    # FP32 ONNX vs PyTorch: same decisions, mAP identical within the tight FP32 budget.
    assert abs(report.parity.delta_map_pt) <= DEFAULT_BUDGETS["fp32"]
    assert report.map == pytest.approx(report.parity.reference_map, abs=DEFAULT_BUDGETS["fp32"] / 100)
    assert report.parity.max_abs_score_diff < 1e-4
    assert report.parity.flip_fraction < 0.01
    # A trained model, not a random one: far above the chance level (class frequency).
    chance = float(np.mean([(targets[targets[:, c] != -1, c] == 1).mean() for c in range(targets.shape[1])]))
    assert report.map > chance + 0.2


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_within_budget(variants, synth_voc, trained_ckpt, torch_probs, precision):
    probs, targets = torch_probs
    report = evaluate(variants[precision], synth_voc, split="test", reference=trained_ckpt)
    assert report.precision == precision
    assert report.parity.budget_pt == DEFAULT_BUDGETS[precision]
    assert report.parity.passed, report.parity
    # ΔmAP is measured against an independently computed reference mAP.
    assert report.parity.reference_map == pytest.approx(sklearn_map(probs, targets), abs=1e-9)
    assert report.parity.delta_map_pt == pytest.approx((report.map - sklearn_map(probs, targets)) * 100, abs=1e-6)


def test_engine_precision_reads_the_export_record(variants):
    assert {k: engine_precision(v) for k, v in variants.items()} == {"fp32": "fp32", "fp16": "fp16", "int8": "int8"}


def test_tune_thresholds_writes_a_usable_card(tiny_onnx, synth_voc, tmp_path, torch_probs):
    engine = tmp_path / "tiny.onnx"
    engine.write_bytes(Path(tiny_onnx).read_bytes())
    report = evaluate(engine, synth_voc, split="test", tune_thresholds=True)
    tuned = read_card(report.tuned["engine"])
    assert Path(report.tuned["card"]).is_file()
    assert tuned.classes == read_card(engine).classes
    # Each tuned threshold does at least as well (F1) on this split as the default 0.5.
    from der_deploy.runtime.predictor import Predictor

    with Predictor(engine) as p:
        from der_deploy.datasets import open_dataset

        ds = open_dataset(synth_voc, "test")
        probs = p.collect(list(ds.paths))["scores"]
    targets = ds.targets()
    for c, thr in enumerate(tuned.thresholds):
        keep = targets[:, c] != -1
        y = targets[keep, c] == 1
        if not y.any():
            continue
        assert f1_score(y, probs[keep, c] >= thr) >= f1_score(y, probs[keep, c] >= 0.5) - 1e-12


def test_budget_exceeded_exits_1(trained_ckpt, synth_voc, tmp_path):
    """An engine from *other* weights (same card) must fail the parity gate with one line and exit 1."""
    import torch

    from der_deploy.export.onnx_export import export_onnx
    from der_deploy.train.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(trained_ckpt)
    torch.manual_seed(123)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.05)
    other = save_checkpoint(tmp_path / "other.pt", model, card)
    engine = export_onnx(other, tmp_path / "other.onnx")
    proc = subprocess.run([str(BIN / "der-eval"), "--engine", str(engine), str(synth_voc), "--reference", str(trained_ckpt),
                           "--json", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1 and "exceeds the fp32 budget" in err_lines[0]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["parity"]["passed"] is False


def test_cli_table_and_bad_budget(tiny_onnx, synth_voc, trained_ckpt, tmp_path):
    ok = subprocess.run([str(BIN / "der-eval"), "--engine", str(tiny_onnx), str(synth_voc), "--reference", str(trained_ckpt),
                         "--budget", "fp32=0.05"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    for word in ("mAP", "CF1", "OF1", "top-3", "PASS"):
        assert word in ok.stdout
    bad = subprocess.run([str(BIN / "der-eval"), "--engine", str(tiny_onnx), str(synth_voc), "--budget", "fp99=1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "PRECISION=POINTS" in bad.stderr


def test_class_mismatch_is_one_clear_error(tiny_onnx, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.jpg")
    (tmp_path / "test.csv").write_text("a.jpg,zebra\n")
    with pytest.raises(DerError, match="differ from the engine"):
        evaluate(tiny_onnx, tmp_path / "test.csv", split="test")



@pytest.fixture(scope="module")
def camera_voc(synth_voc, tmp_path_factory) -> Path:
    """The test split re-encoded as larger JPEGs (400x300), so that draft decoding has something to shrink."""
    import shutil

    from PIL import Image

    out = tmp_path_factory.mktemp("camera") / "voc"
    (out / "JPEGImages").mkdir(parents=True)
    for name in ("Annotations", "ImageSets"):
        shutil.copytree(synth_voc / name, out / name)
    for f in synth_voc.iterdir():
        if f.is_file():
            shutil.copy(f, out / f.name)
    for i in (synth_voc / "ImageSets/Main/test.txt").read_text().split():
        with Image.open(synth_voc / "JPEGImages" / f"{i}.jpg") as im:
            im.convert("RGB").resize((400, 300), Image.BICUBIC).save(out / "JPEGImages" / f"{i}.jpg", quality=90)
    return out


def test_draft_engine_against_full_checkpoint(trained_ckpt, camera_voc, tmp_path):
    """der-export --decode draft of a full-decoding checkpoint: der-eval --reference decodes each side as its card
    says. The reference side must equal the checkpoint in PyTorch on fully decoded images; the engine side must
    equal ONNX Runtime on draft-decoded images; both scored by scikit-learn."""
    import onnxruntime as ort
    import torch

    from der_deploy.datasets import open_dataset
    from der_deploy.images import load_and_preprocess, stack
    from der_deploy.train.checkpoint import load_checkpoint

    model, full_card = load_checkpoint(trained_ckpt)
    draft_card = full_card.replace(decode="draft")
    res = subprocess.run([str(BIN / "der-export"), str(trained_ckpt), "-o", str(tmp_path / "draft.onnx"), "--decode",
                          "draft"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert read_card(tmp_path / "draft.onnx").decode == "draft"
    report = evaluate(tmp_path / "draft.onnx", camera_voc, reference=trained_ckpt)
    ds = open_dataset(camera_voc, "test")
    targets = ds.targets()
    x_draft = stack([load_and_preprocess(p, draft_card) for p in ds.paths])
    x_full = stack([load_and_preprocess(p, full_card) for p in ds.paths])
    assert np.abs(x_draft - x_full).max() > 1e-2  # the two modes really decode differently here
    sess = ort.InferenceSession(str(tmp_path / "draft.onnx"), providers=["CPUExecutionProvider"])
    engine_probs = 1 / (1 + np.exp(-sess.run(["logits"], {"images": x_draft})[0]))
    with torch.inference_mode():
        ref_probs = torch.sigmoid(model(torch.from_numpy(x_full)).logits).numpy()
    assert report.map == pytest.approx(sklearn_map(engine_probs, targets), abs=1e-6)
    assert report.parity.reference_map == pytest.approx(sklearn_map(ref_probs, targets), abs=1e-6)
    assert report.parity.max_abs_score_diff == pytest.approx(np.abs(engine_probs - ref_probs).max(), abs=1e-4)
