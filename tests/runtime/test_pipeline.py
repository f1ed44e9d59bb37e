"""Pipelined inference: order, per-file errors, bounded work in flight, stats, early stop."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import ImageError
from der_deploy.images import load_and_preprocess
from der_deploy.runtime.pipeline import PipelineStats, load_batch, prepare, run_pipeline
from der_deploy.runtime.predictor import Predictor

CARD = ModelCard(classes=["a", "b"], arch="toy", input_size=(4, 4))


class CountingLoader:
    """Thread-safe loader stub: item i -> array filled with i; items in ``bad`` raise ImageError."""

    def __init__(self, bad=(), delay=0.0):
        self.bad, self.delay = set(bad), delay
        self.started = 0
        self.lock = threading.Lock()

    def __call__(self, item, card):
        with self.lock:
            self.started += 1
        time.sleep(self.delay)
        if item in self.bad:
            raise ImageError(f"f{item}.jpg", "truncated")
        return np.full((3, *card.input_size), float(item), np.float32)


def echo(x):
    return {"v": x[:, 0, 0, 0].copy()}


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_order_and_errors_preserved(workers):
    items = list(range(47))  # many more than workers * batch_size
    bad = {0, 5, 6, 17, 31, 46}
    stats = PipelineStats()
    seen, errors = [], []
    loader = CountingLoader(bad, delay=0.001)
    for b in run_pipeline(items, CARD, echo, batch_size=4, workers=workers, loader=loader, stats=stats):
        assert b.items == items[b.start: b.start + 4]
        assert [b.items[i] for i in b.ok] == b.outputs.get("v", np.array([])).astype(int).tolist()
        seen += b.items
        errors += [b.items[i] for i in b.errors]
        assert all("truncated" in msg for msg in b.errors.values())
    assert seen == items and sorted(errors) == sorted(bad)
    assert stats.images == len(items) - len(bad) and stats.failed == len(bad) and stats.batches == 12
    assert stats.wall_s >= stats.engine_s > 0


@pytest.mark.parametrize("prefetch", [1, 2, 5])
def test_work_in_flight_is_bounded(prefetch):
    """Loads started never run more than ``prefetch`` batches ahead of what the caller has consumed."""
    loader = CountingLoader(delay=0.002)
    consumed = 0
    worst = 0
    gen = run_pipeline(list(range(60)), CARD, echo, batch_size=3, workers=3, prefetch=prefetch, loader=loader)
    for b in gen:
        time.sleep(0.01)  # a slow consumer: the pool would race ahead if unbounded
        worst = max(worst, loader.started - consumed * 3)
        consumed += 1
    assert consumed == 20
    assert worst <= prefetch * 3


def test_stats_peak_inflight_and_early_stop():
    loader = CountingLoader(delay=0.002)
    stats = PipelineStats()
    gen = run_pipeline(list(range(200)), CARD, echo, batch_size=2, workers=2, prefetch=3, loader=loader, stats=stats)
    next(gen)
    next(gen)
    gen.close()  # caller stops early: pending work is cancelled, the pool shut down
    started = loader.started
    time.sleep(0.05)
    assert loader.started == started <= 5 * 2
    assert stats.peak_inflight <= 3 and stats.batches == 2 and stats.wall_s > 0


def test_unexpected_errors_propagate():
    def broken(item, card):
        raise RuntimeError("bug in loader")

    with pytest.raises(RuntimeError, match="bug in loader"):
        list(run_pipeline([1, 2, 3], CARD, echo, batch_size=2, workers=2, loader=broken))


def test_argument_checks():
    with pytest.raises(ValueError, match="batch_size"):
        list(run_pipeline([1], CARD, echo, batch_size=0))
    with pytest.raises(ValueError, match="executor"):
        list(run_pipeline([1], CARD, echo, executor="gpu"))
    assert list(run_pipeline([], CARD, echo)) == []


def test_load_batch_and_prepare(image_folder, tiny_model):
    _, files, bad = image_folder
    chunk = [sorted(bad)[0], files[0], sorted(bad)[1], files[1]]
    array, ok, errors = load_batch(prepare, chunk, tiny_model.card)
    assert ok == [1, 3] and sorted(errors) == [0, 2] and array.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(array[1], load_and_preprocess(files[1], tiny_model.card))
    assert load_batch(prepare, [sorted(bad)[0]], tiny_model.card)[0] is None


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_predict_iter_with_real_files(tiny_model, image_folder, executor):
    """More files than workers x batches, bad files in between: results in input order, errors in place."""
    _, files, bad = image_folder
    files = files * 3  # 48 files, 6 bad
    with Predictor(tiny_model.path, batch_size=3, workers=2, executor=executor) as pred:
        preds = list(pred.predict_iter(files))
        stats = pred.last_stats
    assert [p.path for p in preds] == [str(f) for f in files]
    assert [p.error is not None for p in preds] == [f in bad for f in files]
    good = [(f, p) for f, p in zip(files, preds) if f not in bad]
    x = np.stack([load_and_preprocess(f, tiny_model.card) for f, _ in good[:5]])
    ref = tiny_model.reference(x)["scores"]
    for (_, p), r in zip(good, ref):
        np.testing.assert_allclose([p.scores[c] for c in tiny_model.card.classes], r, rtol=1e-5, atol=1e-6)
    assert stats.images == 42 and stats.failed == 6 and stats.executor == executor


def test_preprocess_batches_for_eval(tiny_model, image_folder):
    from der_deploy.runtime.pipeline import preprocess_batches

    _, files, bad = image_folder
    good = [f for f in files if f not in bad]
    batches = list(preprocess_batches(good, tiny_model.card, batch_size=4, workers=2))
    assert [len(b) for b in batches] == [4, 4, 4, 2]
    want = np.stack([load_and_preprocess(f, tiny_model.card) for f in good])
    np.testing.assert_array_equal(np.concatenate(batches), want)
    with pytest.raises(ImageError) as info:
        list(preprocess_batches(files, tiny_model.card, batch_size=4, workers=2))
    assert info.value.path in bad and str(info.value).startswith(str(info.value.path) + ": ")


def test_progress_bar_and_nesting(monkeypatch):
    """With a terminal: the bar shows, and a pipeline without its own bar runs inside a caller's bar."""
    import io

    from rich.console import Console

    import der_deploy.progress as progress

    buf = io.StringIO()
    monkeypatch.setattr(progress, "err_console", Console(file=buf, force_terminal=True, width=100))
    monkeypatch.setattr(progress, "progress_enabled", lambda: True)
    loader = CountingLoader()
    out = list(run_pipeline(list(range(9)), CARD, echo, batch_size=2, workers=2, loader=loader, progress=True,
                            description="decoding-test"))
    assert len(out) == 5 and "decoding-test" in buf.getvalue()
    # der-eval style: the caller owns the (only) live display; the pipeline must not open a second one
    batches = list(progress.track(run_pipeline(list(range(5)), CARD, echo, batch_size=2, workers=1, loader=loader),
                                  "outer", total=3))
    assert len(batches) == 3
