"""Mixed-precision training (issue 16 item 8): --amp bf16 really runs the training forward pass under autocast
while the losses and validation stay float32, the setting is stored and resumed, fp16 without a CUDA GPU is
refused in one line, and StepGuard (plus, for fp16, the GradScaler) still keeps bad steps out of the weights."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from der_deploy.cli.train import main as der_train
from der_deploy.errors import DerError
from der_deploy.train import amp, engine, stability
from der_deploy.train.data import Batch
from der_deploy.train.distributed import DistEnv
from der_deploy.train.engine import TrainConfig, last_path_for, train
from der_deploy.train.model import DER

CLASSES = 4


def _batches(n: int, *, nan_images=(), size=32, seed=0, batch=4) -> list[Batch]:
    # Small: CPUs without native bf16 run bf16 convolutions on a slow reference path.
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        images = torch.randn(batch, 3, size, size, generator=g)
        if i in nan_images:
            images[0, 0, 0, 0] = float("nan")
        targets = (torch.rand(batch, CLASSES, generator=g) < 0.4).float()
        targets[:, 0] = 1.0  # every image has a positive label, so every loss term is active
        out.append(Batch(images, targets, torch.arange(batch) + batch * i, []))
    return out


def _setup(amp_mode, max_bad=3):
    torch.manual_seed(0)
    model = DER(CLASSES, "resnet18", input_size=(32, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    cfg = TrainConfig(data=".", output="m.pt", arch="resnet18", input_size=(32, 32), epochs=1, clip_grad=0.0,
                      warmup_epochs=0.0, max_bad_steps=max_bad, amp=amp_mode)
    return model, opt, cfg, stability.StepGuard(model, max_bad)


def _epoch(model, opt, cfg, guard, loader, precision=None):
    return engine._train_epoch(model, loader, opt, cfg, DistEnv(), 0, guard, Path("nowhere/m.last.pt"), precision)


def _state(model, opt):
    return ([v.clone() for v in model.state_dict().values()],
            [opt.state[p]["momentum_buffer"].clone() for p in model.parameters() if p in opt.state])


def _assert_same(a, b):
    assert len(a[0]) == len(b[0]) and len(a[1]) == len(b[1])
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert torch.equal(x, y)


# --- the training step ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, dtype", [("bf16", torch.bfloat16), ("off", torch.float32)])
def test_autocast_runs_the_forward_and_the_losses_stay_float32(monkeypatch, mode, dtype):
    model, opt, cfg, guard = _setup(mode)
    convs = []
    model.backbone[0].register_forward_hook(lambda mod, args, out: convs.append(out.dtype))
    seen, real_loss = [], engine.der_loss

    def loss_spy(out, targets, **kw):
        parts = real_loss(out, targets, **kw)
        seen.append({"autocast": torch.is_autocast_enabled("cpu"), "inputs": {out.logits.dtype, out.embeddings.dtype},
                     "parts": {p.dtype for p in parts}})
        return parts

    monkeypatch.setattr(engine, "der_loss", loss_spy)
    record = _epoch(model, opt, cfg, guard, _batches(1))
    assert convs == [dtype]  # "off" is the control: the hook does see float32 when autocast is not on
    assert seen == [{"autocast": False, "inputs": {torch.float32}, "parts": {torch.float32}}]
    assert record["skipped"] == 0 and math.isfinite(record["loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast never touches the weights


def test_bf16_guard_skips_non_finite_steps_without_a_trace():
    # Batch 1: NaN input (non-finite loss). Batch 2: finite loss, NaN gradient -- its forward pass has already
    # moved the BatchNorm statistics, which the guard must put back.
    batches = _batches(4, nan_images={1})
    ref, ref_opt, cfg, guard = _setup("bf16")
    _epoch(ref, ref_opt, cfg, guard, [batches[0], batches[3]])
    model, opt, cfg, guard = _setup("bf16")
    calls = []

    def poison(grad):
        calls.append(1)
        return grad * float("nan") if len(calls) == 3 else grad

    model.classifier.weight.register_hook(poison)
    record = _epoch(model, opt, cfg, guard, batches)
    assert len(calls) == 4 and record["skipped"] == 2 and math.isfinite(record["loss"])
    _assert_same(_state(ref, ref_opt), _state(model, opt))  # weights, momentum and BatchNorm as without them


def test_fp16_scaler_overflow_is_not_a_bad_step_but_a_nan_loss_is(monkeypatch):
    # CUDA-only in der-train; the GradScaler logic itself runs on CPU, so it is tested here.
    model, opt, cfg, guard = _setup("fp16", max_bad=1)
    precision = amp.Precision("fp16", "cpu")
    # A lower first scale than the default 2**16, so the unpoisoned step below does not overflow float16 as well.
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    start = _state(model, opt)
    hook = model.classifier.weight.register_hook(lambda g: g * float("inf"))  # finite loss, overflowing gradient
    record = _epoch(model, opt, cfg, guard, _batches(2), precision)  # max_bad=1: a bad step would raise
    assert record["scaler_skipped"] == 2 and record["skipped"] == 0 and guard.in_a_row == 0
    assert math.isfinite(record["loss"]) and precision.scaler.get_scale() == 256.0 / 4
    assert not opt.state  # no update and no momentum: the scaler skipped both steps
    for name, value in zip(model.state_dict(), start[0]):
        if "running" not in name and "num_batches" not in name:  # a scaler skip keeps the forward's BN update
            assert torch.equal(model.state_dict()[name], value), name
    line = engine._summary({"epoch": 1, "map": {"joint": 0.5}, "time": 1.0, **record}, 1, False)
    assert "loss scaler skipped 2" in line and "bad step" not in line

    hook.remove()
    record = _epoch(model, opt, cfg, guard, _batches(1), precision)
    assert record["scaler_skipped"] == 0 and record["skipped"] == 0 and len(opt.state) > 0  # steps again
    real_loss = engine.der_loss

    def nan_loss(*args, **kwargs):
        parts = real_loss(*args, **kwargs)
        return parts._replace(total=parts.total * float("nan"))

    monkeypatch.setattr(engine, "der_loss", nan_loss)
    with pytest.raises(stability.TrainingDiverged, match=r"1 steps in a row.*loss nan, gradient norm nan"):
        _epoch(model, opt, cfg, guard, _batches(1), precision)  # non-finite loss: a bad step, counted


def test_device_checks_refuse_in_one_line(monkeypatch):
    amp.check("bf16", "cpu")
    amp.check("off", "cpu")
    with pytest.raises(DerError, match=r"^--amp fp16 needs a CUDA GPU and this run is on cpu; pass --amp bf16"):
        amp.check("fp16", "cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    with pytest.raises(DerError, match=r"^--amp bf16 needs a GPU with bfloat16 units .*Tesla V100.*--amp fp16") as info:
        amp.check("bf16", "cuda:0")  # emulated bf16 does not count: it would be slower than float32
    assert "\n" not in str(info.value)
    amp.check("fp16", "cuda:0")
    with pytest.raises(DerError, match="--amp"):
        TrainConfig(data=".", output="m.pt", amp="int8").validate()


# --- whole runs -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    from der_deploy.synth import generate

    return generate(tmp_path_factory.mktemp("tiny") / "voc", classes=CLASSES, images=24, seed=2, size=40)


def _tiny(data, out, **kw):
    base = dict(arch="resnet18", input_size=(32, 32), epochs=2, batch_size=8, workers=0, seed=1)
    return TrainConfig(data=data, output=out, **{**base, **kw})


@pytest.fixture(scope="module")
def bf16_epoch1(tiny_voc, tmp_path_factory):
    """A 1-epoch --amp bf16 run on the tiny data (its last checkpoint)."""
    return train(_tiny(tiny_voc, tmp_path_factory.mktemp("bf16") / "m.pt", epochs=1, amp="bf16")).last_path


@pytest.fixture(scope="module")
def bf16_run(tiny_voc, tmp_path_factory):
    """A 2-epoch --amp bf16 run, the (train mode, dtype) of every output of its first convolution, and its
    initial weights."""
    seen, initial, real_build = [], {}, engine.build_model

    def build_spy(cfg, num_classes):
        model = real_build(cfg, num_classes)
        initial.update({k: v.clone() for k, v in model.state_dict().items()})
        model.backbone[0].register_forward_hook(lambda mod, args, out: seen.append((mod.training, out.dtype)))
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "build_model", build_spy)
        result = train(_tiny(tiny_voc, tmp_path_factory.mktemp("bf16run") / "m.pt", amp="bf16"))
    return result, seen, initial


def test_bf16_run_trains_on_cpu_and_stores_amp(bf16_run, tiny_voc, tmp_path):
    """Tiny data rather than TINY's: bf16 convolutions are emulated on CPUs without native bf16 (~4x slower than
    float32 here, see the report of issue 16 item 8), and 1-2 epochs of TINY would not beat chance anyway."""
    result, seen, initial = bf16_run
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}  # validation stays float32
    saved = torch.load(result.last_path, weights_only=True)
    assert saved["config"]["amp"] == "bf16" and saved["epoch"] == 2 and "scaler" not in saved
    assert all(v.dtype != torch.bfloat16 and torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert all(r["skipped"] == 0 and math.isfinite(r["map"]["joint"]) for r in saved["history"])
    # It trains like float32: same seed, same batches; the epoch losses differ by rounding only (measured 0.1% and
    # 1%: the trajectories part slowly, the first steps are a chaotic phase). A broken bf16 step would not.
    fp32 = torch.load(train(_tiny(tiny_voc, tmp_path / "m.pt", amp="off")).last_path, weights_only=True)
    assert fp32["config"]["amp"] == "off"
    for a, b in zip(saved["history"], fp32["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=0.05), (a, b)
    moved = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, saved["state_dict"][k])]
    assert {"backbone.0.weight", "classifier.weight", "embed.2.weight"} <= set(moved)


def test_resume_keeps_the_stored_amp(tiny_voc, bf16_run, bf16_epoch1, tmp_path, capsys):
    resumed = train(_tiny(tiny_voc, tmp_path / "b" / "m.pt", resume=bf16_epoch1))  # --amp not given
    assert "amp bf16" in capsys.readouterr().err  # the header of the resumed run
    a = torch.load(bf16_run[0].last_path, weights_only=True)
    b = torch.load(resumed.last_path, weights_only=True)
    assert b["config"]["amp"] == "bf16" and b["epoch"] == 2
    for key, value in a["state_dict"].items():  # the resumed bf16 run is the straight bf16 run, bit for bit
        assert torch.equal(value, b["state_dict"][key]), key

    # An explicit --amp overrides the stored one; checkpoints from before --amp were float32.
    again = train(_tiny(tiny_voc, tmp_path / "c" / "m.pt", epochs=3, resume=resumed.last_path, amp="off"))
    assert torch.load(again.last_path, weights_only=True)["config"]["amp"] == "off"
    assert amp.resolve(None, {"lr": 0.01}) == "off" and amp.resolve(None, None) == "off"


def test_cli_refuses_fp16_on_cpu_in_one_line(tiny_voc, tmp_path):
    out = tmp_path / "m.pt"
    args = [str(tiny_voc), "-o", str(out), "--amp", "fp16", "--input-size", "32", "--epochs", "1", "--arch", "resnet18",
            "--workers", "0"]
    result = CliRunner().invoke(der_train, args)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --amp fp16 needs a CUDA GPU") and "--amp bf16" in lines[0]
    assert "Traceback" not in result.output and not out.exists() and not last_path_for(out).exists()


def test_cli_refuses_an_fp16_checkpoint_resumed_on_cpu(tiny_voc, bf16_epoch1, tmp_path):
    data = torch.load(bf16_epoch1, weights_only=True)
    data["config"]["amp"] = "fp16"  # as if trained on a GPU with --amp fp16
    torch.save(data, tmp_path / "gpu.pt")
    args = [str(tiny_voc), "-o", str(tmp_path / "n.pt"), "--input-size", "32", "--arch", "resnet18", "--epochs", "2",
            "--workers", "0", "--resume", str(tmp_path / "gpu.pt")]
    result = CliRunner().invoke(der_train, args)
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1
    assert f"--amp fp16 (stored in {tmp_path / 'gpu.pt'}) needs a CUDA GPU" in result.output
    assert not (tmp_path / "n.last.pt").exists()
    fixed = CliRunner().invoke(der_train, args + ["--amp", "off"])  # a fix the message names (off: the cheap one)
    assert fixed.exit_code == 0, fixed.output
    assert torch.load(tmp_path / "n.last.pt", weights_only=True)["config"]["amp"] == "off"
