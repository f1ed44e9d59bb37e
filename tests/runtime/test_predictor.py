"""Predictor against a direct numpy computation of the handmade graph; batching, decisions, validation."""
from __future__ import annotations

import numpy as np
import pytest

from der_deploy.errors import EngineError, ImageError
from der_deploy.images import load_and_preprocess, load_image, preprocess, stack
from der_deploy.runtime.predictor import Prediction, Predictor, sigmoid


def _batch(n, seed=0, size=32):
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def _expected_labels(scores, classes, thresholds):
    keep = [(s, i) for i, s in enumerate(scores) if s >= thresholds[i]]
    return [classes[i] for s, i in sorted(keep, key=lambda t: (-t[0], t[1]))]


def test_paths_images_and_arrays_match_numpy(tiny_model, image_folder):
    _, files, bad = image_folder
    good = [f for f in files if f not in bad]
    x = stack([load_and_preprocess(f, tiny_model.card) for f in good])
    ref = tiny_model.reference(x)["scores"]
    with Predictor(tiny_model.path, batch_size=4, workers=2) as pred:
        assert pred.card == tiny_model.card and pred.has_cadm
        by_path = pred.predict(good)
        by_image = pred.predict([load_image(f) for f in good])
        by_array = pred.predict(x)
        np.testing.assert_allclose(pred.scores(x), ref, rtol=1e-5, atol=1e-6)
    for preds in (by_path, by_image, by_array):
        assert len(preds) == len(good)
        for p, r in zip(preds, ref):
            assert p.ok
            np.testing.assert_allclose([p.scores[c] for c in tiny_model.card.classes], r, rtol=1e-5, atol=1e-6)
            assert p.labels == _expected_labels(r, tiny_model.card.classes, tiny_model.card.thresholds)
    assert [p.path for p in by_path] == [str(f) for f in good]
    assert all(p.path is None for p in by_image)


def test_single_inputs_and_bad_file(tiny_model, image_folder):
    _, files, bad = image_folder
    with Predictor(tiny_model.path, workers=0) as pred:
        (one,) = pred.predict(files[0])
        assert one.path == str(files[0]) and one.ok
        (err,) = pred.predict(sorted(bad)[0])
    assert not err.ok and err.labels == [] and err.scores == {}
    assert err.error.startswith(str(sorted(bad)[0]))
    assert err.to_dict() == {"path": str(sorted(bad)[0]), "error": err.error}
    assert set(one.to_dict()) == {"path", "labels", "scores"}


def test_batches_split_to_fixed_engine_batch(fixed_batch_model):
    x = _batch(10, seed=3)
    with Predictor(fixed_batch_model.path) as pred:
        shapes = []
        real = pred.runner.infer
        pred.runner.infer = lambda feed: shapes.append(feed["images"].shape[0]) or real(feed)
        out = pred.infer_batch(x)
        single = pred.infer_batch(x[:1])
    assert shapes == [4, 4, 4, 4]  # 4 + 4 + 2 (padded to 4), then 1 (padded to 4)
    ref = fixed_batch_model.reference(x)
    for name in ("logits", "scores", "cadm"):
        assert out[name].shape[0] == 10
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(single["scores"], ref["scores"][:1], rtol=1e-5, atol=1e-6)


def test_dynamic_engine_runs_one_call(tiny_model):
    with Predictor(tiny_model.path) as pred:
        calls = []
        real = pred.runner.infer
        pred.runner.infer = lambda feed: calls.append(feed["images"].shape[0]) or real(feed)
        pred.infer_batch(_batch(13))
    assert calls == [13]


def test_decision_rules(tiny_model):
    x = _batch(40, seed=7)
    ref = tiny_model.reference(x)["scores"]
    classes = tiny_model.card.classes
    with Predictor(tiny_model.path) as pred:
        per_class = pred.predict(x)
        flat = pred.predict(x, threshold=0.5)
        top2 = pred.predict(x, top_k=2)
        top1_of_passing = pred.predict(x, threshold=0.6, top_k=1)
        with pytest.raises(ValueError, match="top_k"):
            pred.predict(x, top_k=5)
        with pytest.raises(ValueError, match="threshold"):
            pred.predict(x, threshold=1.5)
    n_diff = 0
    for r, a, b, c, d in zip(ref, per_class, flat, top2, top1_of_passing):
        assert a.labels == _expected_labels(r, classes, tiny_model.card.thresholds)
        assert b.labels == _expected_labels(r, classes, [0.5] * 4)
        assert c.labels == [classes[i] for i in np.argsort(-r, kind="stable")[:2]]
        assert d.labels == _expected_labels(r, classes, [0.6] * 4)[:1]
        n_diff += a.labels != b.labels
    assert n_diff > 0  # the per-class thresholds really changed decisions on this data


def test_logits_only_engine_uses_sigmoid():
    assert np.allclose(sigmoid(np.array([0.0, 2.0, -800.0])), [0.5, 1 / (1 + np.exp(-2.0)), 0.0])
    assert Predictor._probs({"logits": np.array([[0.0, 1.0]])}).dtype == np.float32


def test_input_validation(tiny_model):
    with Predictor(tiny_model.path) as pred:
        with pytest.raises(ValueError, match=r"expects \(3, 32, 32\)"):
            pred.infer_batch(np.zeros((2, 3, 64, 64), np.float32))
        with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
            pred.infer_batch(np.zeros((3, 32, 32), np.float32))
        with pytest.raises(ValueError, match=r"expects \(3, 32, 32\)"):
            pred.predict(np.zeros((3, 16, 16), np.float32))
        with pytest.raises(TypeError, match="cannot run inference on a int"):
            pred.predict([42])
        # float64 input is accepted and converted
        assert pred.scores(_batch(2).astype(np.float64)).dtype == np.float32


def test_card_engine_mismatch(tmp_path, make_tiny):
    m = make_tiny(tmp_path / "m.onnx", card_size=(64, 64))
    with pytest.raises(EngineError, match="does not match the card"):
        Predictor(m.path)


def test_collect_stacks_in_order_and_raises_on_bad_file(tiny_model, image_folder):
    _, files, bad = image_folder
    good = [f for f in files if f not in bad]
    with Predictor(tiny_model.path, batch_size=3, workers=2) as pred:
        out = pred.collect(good)
        assert pred.last_stats.images == len(good)
        with pytest.raises(ImageError) as info:
            pred.collect(files)
        with pytest.raises(EngineError, match="no 'embeddings' output"):
            pred.collect(good, names=("embeddings",))
    x = stack([load_and_preprocess(f, tiny_model.card) for f in good])
    ref = tiny_model.reference(x)
    np.testing.assert_allclose(out["logits"], ref["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["scores"], ref["scores"], rtol=1e-5, atol=1e-6)
    assert info.value.path in bad


def test_cadm_rows_follow_predictions(tiny_model, no_cadm_model):
    x = _batch(6, seed=11)
    with Predictor(tiny_model.path, batch_size=4) as pred:
        preds = pred.predict(x, with_cadm=True)
    ref = tiny_model.reference(x)["cadm"]
    for p, r in zip(preds, ref):
        np.testing.assert_allclose(p.cadm, r, rtol=1e-5, atol=1e-5)
    with Predictor(no_cadm_model.path) as pred:
        assert not pred.has_cadm
        with pytest.raises(EngineError, match=r"has no 'cadm' output; re-export with der-export --cadm"):
            pred.predict(x, with_cadm=True)


def test_prediction_record():
    p = Prediction("a.jpg", ["cat"], {"cat": 0.9, "dog": 0.1})
    assert p.ok and p.to_dict() == {"path": "a.jpg", "labels": ["cat"], "scores": {"cat": 0.9, "dog": 0.1}}


@pytest.mark.slow
def test_trained_tiny_model_matches_pytorch(tiny_onnx, trained_ckpt, synth_voc):
    """End to end on the trained model: Predictor (ORT, pipeline, decode pool) vs the PyTorch checkpoint."""
    import torch

    from der_deploy.train.checkpoint import load_checkpoint

    files = sorted((synth_voc / "JPEGImages").glob("*.jpg"))[:24]
    model, card = load_checkpoint(trained_ckpt)
    with Predictor(tiny_onnx, batch_size=5, workers=2) as pred:
        assert pred.card.classes == card.classes and pred.has_cadm
        preds = pred.predict(files, with_cadm=True)
    x = stack([preprocess(load_image(f), card) for f in files])
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    want = torch.sigmoid(out.logits).numpy()
    got = np.array([[p.scores[c] for c in card.classes] for p in preds])
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np.stack([p.cadm for p in preds]), out.cadm.numpy(), rtol=1e-3, atol=1e-3)
    for p, r in zip(preds, want):
        assert p.labels == _expected_labels(r, card.classes, card.thresholds) or np.any(
            np.abs(r - np.array(card.thresholds)) < 1e-4)  # only a score on a threshold may flip
