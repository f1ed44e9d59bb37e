"""Training loop: the session-trained tiny model learns, its stored metrics are reproducible, resume is exact,
Ctrl-C keeps the last good checkpoint, and user errors are one line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from der_deploy.datasets import open_dataset
from der_deploy.errors import CheckpointError, DerError, ImageError
from der_deploy.metrics import average_precision
from der_deploy.train import engine
from der_deploy.train.checkpoint import load_checkpoint, read_checkpoint
from der_deploy.train.engine import TrainConfig, last_path_for, predict_scores, stream_maps, train


# "Clearly better than chance": a random ranking of ~100 test images scatters by ~0.03 mAP around chance.
CHANCE_MARGIN = 0.10


def chance_map(targets: np.ndarray) -> float:
    """Expected AP of a random ranking is the positive rate of the class (-1 excluded)."""
    rates = [(targets[targets[:, c] != -1, c] == 1).mean() for c in range(targets.shape[1])
             if (targets[:, c] == 1).any()]
    return float(np.mean(rates))


@pytest.mark.slow
def test_trained_model_beats_chance_and_metrics_are_reproducible(trained_ckpt, synth_voc, tiny_recipe):
    TINY = tiny_recipe
    data = read_checkpoint(trained_ckpt)
    model, card = load_checkpoint(trained_ckpt)
    val = open_dataset(synth_voc, data["config"]["val_split"])
    assert card.classes == val.classes and card.input_size == TINY["input_size"]
    assert card.provenance["data"]["split"] == "trainval" and card.provenance["data"]["name"] == val.name
    logits, targets = predict_scores(model, val, card, batch_size=7)  # other batching than training's eval
    maps = stream_maps(logits, targets)
    assert set(maps) == {"fcls", "scls", "joint"}
    stored = data["metrics"]
    for stream, value in maps.items():
        assert stored["maps"][stream] == pytest.approx(value, abs=1e-9), stream
    ap = average_precision(logits["joint"], targets)
    np.testing.assert_allclose(stored["ap"], ap, atol=1e-9)
    chance = chance_map(targets)
    assert maps["joint"] > chance + CHANCE_MARGIN, (maps, chance)
    # best checkpoint = argmax of the joint mAP history; last checkpoint = final epoch
    history = data["history"]
    best_epoch = max(history, key=lambda r: r["map"]["joint"])["epoch"]
    assert stored["epoch"] == data["epoch"] == best_epoch
    last = read_checkpoint(last_path_for(trained_ckpt))
    assert last["epoch"] == TINY["epochs"] == len(last["history"])
    assert [r["lr"] for r in last["history"]][:1] == [data["config"]["lr"]]


@pytest.fixture(scope="module")
def small_voc(tmp_path_factory):
    from der_deploy.synth import generate

    return generate(tmp_path_factory.mktemp("small") / "voc", classes=4, images=44, seed=1, size=48)


def _cfg(data, out, **kw):
    base = dict(arch="resnet18", input_size=(48, 48), epochs=3, batch_size=8, lr=0.01, lr_step=2, workers=0, seed=3)
    base.update(kw)
    return TrainConfig(data=data, output=out, **base)


def test_interrupt_then_resume_equals_straight_run(small_voc, tmp_path, monkeypatch, capsys):
    straight = train(_cfg(small_voc, tmp_path / "a" / "m.pt"))
    # Interrupt during the third epoch: the last good checkpoint is the one of epoch 2.
    real = engine._train_epoch

    def interrupting(net, loader, optimizer, cfg, env, epoch, *rest):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(net, loader, optimizer, cfg, env, epoch, *rest)

    monkeypatch.setattr(engine, "_train_epoch", interrupting)
    out = tmp_path / "b" / "m.pt"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(small_voc, out))
    assert "interrupted" in capsys.readouterr().err
    last = last_path_for(out)
    assert read_checkpoint(last)["epoch"] == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.last.pt", "m.pt"]  # no temp files
    monkeypatch.undo()
    resumed = train(_cfg(small_voc, out, resume=last))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    a = read_checkpoint(straight.last_path)
    b = read_checkpoint(resumed.last_path)
    # CPU kernels are deterministic for the same batches, so the weights match bit for bit.
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["scheduler"] == b["scheduler"]
    assert [r["map"] for r in a["history"]] == [r["map"] for r in b["history"]]
    assert resumed.best_map == straight.best_map
    # nothing left to do -> clear error
    with pytest.raises(DerError, match="already trained for 3 epochs"):
        train(_cfg(small_voc, out, resume=resumed.last_path))


def test_ablation_heads_and_checkpoint_contents(small_voc, tmp_path):
    base = train(_cfg(small_voc, tmp_path / "base.pt", head="baseline", epochs=1, workers=1))
    assert set(base.history[0]["map"]) == {"fcls", "joint"}
    assert base.history[0]["lce"] == 0 and base.history[0]["rank"] == 0
    model, _ = load_checkpoint(base.best_path)
    assert model.head == "baseline" and model.embed is None
    off = train(_cfg(small_voc, tmp_path / "off.pt", alpha=0.0, beta=0.0, epochs=1))
    rec = off.history[0]
    assert set(rec["map"]) == {"fcls", "scls", "joint"}
    assert rec["loss"] == pytest.approx(rec["cls"]) and rec["lce"] > 0  # parts are logged even when weighted 0
    config = read_checkpoint(off.best_path)["config"]
    assert config["alpha"] == 0.0 and config["input_size"] == [48, 48] and config["data"] == str(small_voc)


def test_resume_with_other_options_is_refused(small_voc, tmp_path):
    first = train(_cfg(small_voc, tmp_path / "m.pt", epochs=1))
    with pytest.raises(CheckpointError, match="head der, this run has baseline"):
        train(_cfg(small_voc, tmp_path / "m.pt", epochs=2, head="baseline", resume=first.last_path))


def test_unreadable_training_image_fails_clearly(small_voc, tmp_path):
    import shutil

    data = tmp_path / "voc"
    shutil.copytree(small_voc, data)
    name = open_dataset(data, "trainval")[3][0].name
    (data / "JPEGImages" / name).write_bytes(b"\xff\xd8 broken jpeg")
    with pytest.raises(ImageError, match=name):
        train(_cfg(data, tmp_path / "m.pt", epochs=1, workers=1))  # the error crosses the worker process


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "der_deploy.cli.train", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_errors_are_one_line(tmp_path, small_voc):
    res = _cli(tmp_path / "nope", "-o", tmp_path / "m.pt", "--arch", "resnet18", "--input-size", "48")
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "nope" in res.stderr
    junk = tmp_path / "junk.pt"
    junk.write_text("x")
    res = _cli(small_voc, "-o", tmp_path / "m.pt", "--arch", "resnet18", "--input-size", "48", "--resume", junk)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "junk.pt: not a der-deploy checkpoint" in res.stderr
    res = _cli(small_voc, "-o", tmp_path / "m.pt", "--input-size", "4x")
    assert res.returncode == 2 and "is not a size" in res.stderr and "Traceback" not in res.stderr
