"""Training survives the paper's recipe (issue 11 §2): the divergence reproduction, the per-step guard
(skipped steps leave weights, momentum and BatchNorm statistics untouched; a run of them aborts and keeps the
last good checkpoint), gradient clipping and linear warm-up, and how both are recorded and resumed."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from der_deploy.train import engine, stability
from der_deploy.train.checkpoint import read_checkpoint
from der_deploy.train.data import Batch
from der_deploy.train.distributed import DistEnv
from der_deploy.train.engine import TrainConfig, last_path_for, train
from der_deploy.train.model import DER
from der_deploy.train.stability import DEFAULT_CLIP_GRAD, TrainingDiverged, grad_norm, warmup_factor

CLASSES = 4


def _batches(n: int, *, nan_images=(), size=32, seed=0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        images = torch.randn(6, 3, size, size, generator=g)
        if i in nan_images:
            images[0, 0, 0, 0] = float("nan")
        targets = (torch.rand(6, CLASSES, generator=g) < 0.4).float()
        targets[:, 0] = 1.0  # every image has a positive label, so every loss term is active
        out.append(Batch(images, targets, torch.arange(6) + 6 * i, []))
    return out


def _setup(*, clip=0.0, warmup=0.0, max_bad=3, lr=0.01, weight_decay=1e-4):
    torch.manual_seed(0)
    model = DER(CLASSES, "resnet18", input_size=(32, 32))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    cfg = TrainConfig(data=".", output="m.pt", arch="resnet18", input_size=(32, 32), epochs=3, lr=lr,
                      clip_grad=clip, warmup_epochs=warmup, max_bad_steps=max_bad)
    return model, opt, cfg, stability.StepGuard(model, max_bad)


def _epoch(model, opt, cfg, guard, loader, epoch=0, good=Path("nowhere/m.last.pt")):
    return engine._train_epoch(model, loader, opt, cfg, DistEnv(), epoch, guard, good)


def _assert_same_state(a, opt_a, b, opt_b):
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), key  # parameters and BatchNorm running stats / counters
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(opt_a.state[pa]["momentum_buffer"], opt_b.state[pb]["momentum_buffer"])


def test_nan_batch_is_skipped_without_a_trace():
    batches = _batches(3, nan_images={1})
    ref, ref_opt, cfg, guard = _setup()
    _epoch(ref, ref_opt, cfg, guard, [batches[0], batches[2]])
    model, opt, cfg, guard = _setup()
    record = _epoch(model, opt, cfg, guard, batches)
    assert record["skipped"] == 1 and math.isfinite(record["loss"])
    _assert_same_state(ref, ref_opt, model, opt)  # as if the NaN batch had never been there


def test_nan_gradient_with_finite_loss_is_skipped_and_batchnorm_restored():
    # The poisoned step's forward pass (finite) has already moved the BatchNorm statistics: they must be undone.
    batches = _batches(3)
    ref, ref_opt, cfg, guard = _setup()
    _epoch(ref, ref_opt, cfg, guard, [batches[0], batches[2]])
    model, opt, cfg, guard = _setup()
    calls = []

    def poison(grad):
        calls.append(1)
        return grad * float("nan") if len(calls) == 2 else grad

    model.classifier.weight.register_hook(poison)
    record = _epoch(model, opt, cfg, guard, batches)
    assert len(calls) == 3 and record["skipped"] == 1
    _assert_same_state(ref, ref_opt, model, opt)


def test_a_run_of_bad_steps_aborts_but_scattered_ones_do_not():
    model, opt, cfg, guard = _setup(max_bad=2)
    record = _epoch(model, opt, cfg, guard, _batches(5, nan_images={0, 2, 4}))
    assert record["skipped"] == 3 and guard.in_a_row == 1
    model, opt, cfg, guard = _setup(max_bad=3)
    with pytest.raises(TrainingDiverged) as info:
        _epoch(model, opt, cfg, guard, _batches(5, nan_images={1, 2, 3}))
    message = str(info.value)
    assert "3 steps in a row" in message and "step 4" in message and "loss nan" in message
    assert "no epoch completed" in message and "\n" not in message
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_grad_norm_and_clipping_against_a_direct_computation():
    model, opt, cfg, guard = _setup()
    out = model(_batches(1)[0].images)
    (out.logits.pow(2).sum() + out.embeddings.pow(2).sum()).backward()
    grads = [p.grad.detach().double() for p in model.parameters() if p.grad is not None]
    expected = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    assert float(grad_norm(model.parameters(), 0.0)) == pytest.approx(expected, rel=1e-5)
    assert float(grad_norm(model.parameters(), 0.0)) == pytest.approx(expected, rel=1e-5)  # unchanged
    clip = expected / 7
    assert float(grad_norm(model.parameters(), clip)) == pytest.approx(expected, rel=1e-5)  # pre-clip norm
    assert float(grad_norm(model.parameters(), 0.0)) == pytest.approx(clip, rel=1e-4)


def test_clipping_bounds_the_first_update():
    # First SGD step without weight decay: the momentum buffer is the (clipped) gradient itself.
    model, opt, cfg, guard = _setup(clip=0.25, weight_decay=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    _epoch(model, opt, cfg, guard, _batches(1))
    buffers = [opt.state[p]["momentum_buffer"].double() for p in model.parameters() if p in opt.state]
    assert math.sqrt(sum(float(b.pow(2).sum()) for b in buffers)) == pytest.approx(0.25, rel=1e-4)
    for p, b, start in zip(model.parameters(), buffers, before):
        torch.testing.assert_close(p.detach(), start - cfg.lr * b.float(), rtol=0, atol=1e-6)


def test_warmup_is_linear_per_step_and_restores_the_scheduled_rate():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    model, opt, cfg, guard = _setup(warmup=1.5)  # 4 steps per epoch -> 6 warm-up steps
    seen = []
    real_step = opt.step

    def spy(*args, **kwargs):
        seen.append(opt.param_groups[0]["lr"])
        return real_step(*args, **kwargs)

    opt.step = spy
    records = [_epoch(model, opt, cfg, guard, _batches(4, seed=e), epoch=e) for e in range(2)]
    assert seen == pytest.approx([0.01 * min(1.0, (k + 1) / 6) for k in range(8)], rel=1e-12)
    assert opt.param_groups[0]["lr"] == 0.01  # StepLR multiplies the stored rate: it must be the scheduled one
    assert records[0]["lr_first"] == pytest.approx(0.01 / 6) and records[0]["lr"] == pytest.approx(0.01 * 4 / 6)
    line = engine._summary({"epoch": 1, "map": {"joint": 0.5}, "time": 1.0, **records[0], "skipped": 2}, 3, False)
    assert "lr 0.00167->0.00667 (warm-up)" in line and "skipped 2 bad steps" in line


def test_settings_resolution_for_fresh_resumed_and_old_checkpoints():
    cfg = TrainConfig(data=".", output="m.pt")
    fresh = engine._stability_settings(cfg, None)
    assert (fresh.clip_grad, fresh.warmup_epochs) == (DEFAULT_CLIP_GRAD, 0.0)
    old = engine._stability_settings(cfg, {"lr": 0.01})  # checkpoint from before the options: no clipping
    assert (old.clip_grad, old.warmup_epochs) == (0.0, 0.0)
    saved = engine._stability_settings(cfg, {"clip_grad": 3.0, "warmup_epochs": 2.0})
    assert (saved.clip_grad, saved.warmup_epochs) == (3.0, 2.0)
    given = TrainConfig(data=".", output="m.pt", clip_grad=0.0, warmup_epochs=0.5)
    assert engine._stability_settings(given, {"clip_grad": 3.0, "warmup_epochs": 2.0}).clip_grad == 0.0
    with pytest.raises(Exception, match="--clip-grad must be >= 0"):
        TrainConfig(data=".", output="m.pt", clip_grad=-1.0).validate()
    with pytest.raises(Exception, match="--max-bad-steps"):
        TrainConfig(data=".", output="m.pt", max_bad_steps=0).validate()


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str, agree: bool) -> None:
    import torch.distributed as dist

    from der_deploy.train import distributed as ddp

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        env = DistEnv(rank=rank, world_size=world, local_rank=rank, local_world_size=world)
        model, opt, cfg, guard = _setup()
        net = ddp.wrap(model, env)
        real, calls = engine.der_loss, []

        def nan_loss_on_rank_1(*args, **kwargs):
            parts = real(*args, **kwargs)
            calls.append(1)
            if rank == 1 and len(calls) == 2:  # a non-finite loss whose gradient is finite: only rank 1 sees it
                return parts._replace(total=parts.total + float("nan"))
            return parts

        engine.der_loss = nan_loss_on_rank_1
        if not agree:  # the negative control: each rank decides alone
            ddp.all_agree = lambda env, ok: ok
        record = engine._train_epoch(net, _batches(3, seed=rank), opt, cfg, env, 0, guard, Path("x"))
        torch.save({"skipped": record["skipped"], "params": [p.detach() for p in model.parameters()]},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("agree", [True, False])
def test_ddp_ranks_skip_together(tmp_path, agree):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), agree), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    same = all(torch.equal(a, b) for a, b in zip(ranks[0]["params"], ranks[1]["params"]))
    if agree:
        assert [r["skipped"] for r in ranks] == [1, 1] and same
    else:  # negative control: without the all-reduce rank 0 steps alone and the replicas drift apart
        assert not same


# --- whole runs on a tiny generated dataset ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    from der_deploy.synth import generate

    return generate(tmp_path_factory.mktemp("tiny") / "voc", classes=CLASSES, images=36, seed=2, size=40)


def _tiny(data, out, **kw):
    base = dict(arch="resnet18", input_size=(32, 32), epochs=2, batch_size=8, workers=0, seed=1)
    return TrainConfig(data=data, output=out, **{**base, **kw})


def test_bad_steps_are_shown_and_a_run_of_them_keeps_the_last_good_checkpoint(tiny_voc, tmp_path, monkeypatch,
                                                                               capsys):
    state = {"epoch": 0, "step": 0}
    real_epoch, real_loss = engine._train_epoch, engine.der_loss

    def epoch_spy(net, loader, optimizer, cfg, env, epoch, *rest):
        state.update(epoch=epoch, step=0)
        return real_epoch(net, loader, optimizer, cfg, env, epoch, *rest)

    def poisoned_loss(*args, **kwargs):
        parts = real_loss(*args, **kwargs)
        state["step"] += 1
        bad = (state["epoch"] == 0 and state["step"] == 2) or state["epoch"] == 1
        return parts._replace(total=parts.total * float("nan")) if bad else parts

    monkeypatch.setattr(engine, "_train_epoch", epoch_spy)
    monkeypatch.setattr(engine, "der_loss", poisoned_loss)
    out = tmp_path / "m.pt"
    with pytest.raises(TrainingDiverged) as info:
        train(_tiny(tiny_voc, out, epochs=3, max_bad_steps=2))
    last = last_path_for(out)
    message = str(info.value)
    assert f"the last good checkpoint is kept: {last} (epoch 1)" in message and f"--resume {last}" in message
    assert "2 steps in a row" in message and "epoch 2" in message
    err = capsys.readouterr().err
    assert "epoch 1/3  loss" in err and "skipped 1 bad step " in err and "epoch 2/3  loss" not in err
    data = read_checkpoint(last)
    assert data["epoch"] == 1 and data["history"][0]["skipped"] == 1
    assert data["config"]["clip_grad"] == DEFAULT_CLIP_GRAD and data["config"]["max_bad_steps"] == 2
    assert read_checkpoint(out)["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in data["state_dict"].values())

    # Finite but useless weights show up as non-finite validation scores: nothing is saved over the good epoch.
    monkeypatch.setattr(engine, "der_loss", real_loss)
    monkeypatch.setattr(engine, "_predict", lambda *a: {"joint": np.full((9, CLASSES), np.nan, np.float32)})
    with pytest.raises(TrainingDiverged, match=r"validation scores after epoch 2 are not finite; the last good "
                                               r"checkpoint is kept: .*m\.last\.pt \(epoch 1\)"):
        train(_tiny(tiny_voc, out, epochs=3, resume=last))
    assert read_checkpoint(last)["epoch"] == 1


def test_warmup_and_clipping_are_recorded_and_resumed_exactly(tiny_voc, tmp_path):
    opts = dict(clip_grad=0.5, warmup_epochs=1.8, lr=0.02)
    straight = train(_tiny(tiny_voc, tmp_path / "a" / "m.pt", epochs=2, **opts))
    first = train(_tiny(tiny_voc, tmp_path / "b" / "m.pt", epochs=1, **opts))
    resumed = train(_tiny(tiny_voc, tmp_path / "b" / "m.pt", epochs=2, lr=0.02, resume=first.last_path))  # unset
    a, b = read_checkpoint(straight.last_path), read_checkpoint(resumed.last_path)
    assert b["config"]["clip_grad"] == 0.5 and b["config"]["warmup_epochs"] == 1.8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    lrs = [(r["lr_first"], r["lr"]) for r in b["history"]]
    assert lrs == [(r["lr_first"], r["lr"]) for r in a["history"]]
    assert lrs[1][0] < 0.02 and lrs[1][1] == pytest.approx(0.02)  # warm-up ends inside epoch 2
    assert lrs[0][0] == pytest.approx(0.02 / round(1.8 * len_loader(tiny_voc)))


def len_loader(data) -> int:
    from der_deploy.datasets import open_dataset

    n = len(open_dataset(data, "trainval"))
    return math.ceil(n / 8) if n % 8 != 1 else n // 8


def test_cli_flags():
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "der_deploy.cli.train", *args], capture_output=True, text=True,
                              timeout=120)

    help_text = cli("--help").stdout
    for flag in ("--clip-grad", "--warmup-epochs", "--max-bad-steps"):
        assert flag in help_text
    assert f"Default {DEFAULT_CLIP_GRAD:g}," in " ".join(help_text.split())
    bad = cli(".", "-o", "m.pt", "--clip-grad", "-1")
    assert bad.returncode != 0 and "--clip-grad" in bad.stderr and "Traceback" not in bad.stderr


# --- the reproduction -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_issue_recipe_on_ten_generated_classes_trains(tmp_path):
    """Issue 11 §2 on generated data: 10 classes, 1200 images of 160 px, resnet18 at 96 px, batch 16, SGD lr 0.01,
    seed 0. Before the fix this died in epoch 1 (on the 2-thread CPU used here: a finite gradient spike of ~7e4
    at step 27, float32 overflow in layer 4's BatchNorm at step 28, "training diverged (loss nan)"); the
    trajectory is chaotic, so other CPUs may fail at other steps or seeds."""
    from der_deploy.synth import generate

    data = generate(tmp_path / "voc", classes=10, images=1200, seed=0, size=160)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = train(TrainConfig(data=data, output=tmp_path / "m.pt", arch="resnet18", input_size=(96, 96),
                                   epochs=1, batch_size=16, lr=0.01, workers=0, seed=0))
    finally:
        torch.set_num_threads(threads)
    record = result.history[0]
    assert all(math.isfinite(record[k]) for k in ("loss", "cls", "lce", "rank"))
    # One epoch from scratch learns little (joint mAP 0.25 here, chance 0.18): the claim tested is that the
    # run completes with finite losses, weights and validation scores.
    data = read_checkpoint(result.last_path)
    assert data["epoch"] == 1 and all(math.isfinite(v) for v in data["metrics"]["maps"].values())
    assert all(torch.isfinite(v).all() for v in data["state_dict"].values())
