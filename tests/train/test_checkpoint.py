"""Checkpoints: plain-data dicts that round-trip, load with weights_only=True and fail clearly."""
from __future__ import annotations

import pytest
import torch

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import CheckpointError
from der_deploy.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from der_deploy.train.model import DER

CLASSES = ["a", "b", "c"]


def _setup(tmp_path, head="der", size=(64, 64)):
    torch.manual_seed(0)
    model = DER(len(CLASSES), "resnet18", input_size=size, head=head)
    card = ModelCard(classes=CLASSES, arch="resnet18", input_size=size)
    return model, card, tmp_path / "m.pt"


@pytest.mark.parametrize("head", ["der", "baseline"])
def test_round_trip_outputs_equal(tmp_path, head):
    model, card, path = _setup(tmp_path, head=head)
    # a short training step so BN running stats and weights are not the init values
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    model(torch.randn(4, 3, 64, 64)).logits.sum().backward()
    opt.step()
    save_checkpoint(path, model, card, config={"lr": 0.1, "input_size": [64, 64]}, metrics={"map": 0.5},
                    epoch=1, optimizer=opt.state_dict())
    loaded, card2 = load_checkpoint(path)
    assert not loaded.training and card2 == card and loaded.head == head
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for name in a._fields:
        if getattr(a, name) is None:
            assert getattr(b, name) is None
        else:
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_loads_with_weights_only(tmp_path):
    model, card, path = _setup(tmp_path)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.1)
    model(torch.randn(2, 3, 64, 64)).logits.sum().backward()
    opt.step()
    sched.step()
    save_checkpoint(path, model, card, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                    rng=torch.get_rng_state(), history=[{"epoch": 1, "map": {"joint": 0.4}}])
    data = torch.load(path, map_location="cpu", weights_only=True)  # raises on any non-plain object
    assert data["format"] == "der-deploy/checkpoint" and data["arch"] == "resnet18" and data["num_classes"] == 3
    assert data["card"]["classes"] == CLASSES and data["input_size"] == [64, 64]
    assert data["scheduler"]["last_epoch"] == 1
    assert read_checkpoint(path)["history"][0]["map"]["joint"] == 0.4


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a der-deploy checkpoint"):
        load_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.pt: not a der-deploy checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def _rewrite(path, **changes):
    data = torch.load(path, weights_only=True)
    data.update(changes)
    torch.save(data, path)
    return data


def test_unknown_arch(tmp_path):
    model, card, path = _setup(tmp_path)
    save_checkpoint(path, model, card)
    _rewrite(path, arch="resnet200")
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet200'"):
        load_checkpoint(path)


def test_missing_keys(tmp_path):
    model, card, path = _setup(tmp_path)
    save_checkpoint(path, model, card)
    data = torch.load(path, weights_only=True)
    del data["state_dict"]["classifier.weight"]
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="missing keys classifier.weight"):
        load_checkpoint(path)


def test_shape_mismatch(tmp_path):
    model, card, path = _setup(tmp_path)
    save_checkpoint(path, model, card)
    _rewrite(path, input_size=[96, 96])  # f_embed is built for 3x3 maps, the weights are for 2x2
    with pytest.raises(CheckpointError, match=r"does not match a resnet18 DER model"):
        load_checkpoint(path)
    _rewrite(path, input_size=[64, 64], arch="resnet34")
    with pytest.raises(CheckpointError, match="does not match a resnet34 DER model"):
        load_checkpoint(path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    model, card, path = _setup(tmp_path)
    save_checkpoint(path, model, card, epoch=1)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, card, epoch=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temp file left behind
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1
