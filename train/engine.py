"""The paper's training recipe (§IV-B): SGD + step LR, Eq. 16 loss, per-epoch validation mAP per stream.

Resume is exact: data order comes from DistributedSampler(seed + epoch) and augmentation from
(seed, epoch, index), so a run stopped after epoch k and resumed sees the same batches as a straight run;
model, optimizer (momentum) and scheduler state come from the checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from der_deploy.artifact.card import DECODE_MODES, ModelCard
from der_deploy.datasets import open_dataset
from der_deploy.errors import CheckpointError, DatasetError, DerError
from der_deploy.fileio import atomic_path, check_writable
from der_deploy.metrics import average_precision
from der_deploy.progress import err_console, track

from . import amp as amp_
from . import backbones
from . import distributed as ddp
from .batchnorm import recalibrate_batchnorm
from .checkpoint import read_checkpoint, save_checkpoint
from .data import EvalImages, TrainImages, check_batch, make_loader
from .losses import EMBED_LOSSES, der_loss
from .model import ARCHS, DER, HEADS, load_backbone_weights
from .report import header as _header
from .report import summary as _summary
from .stability import (DEFAULT_CLIP_GRAD, DEFAULT_MAX_BAD_STEPS, StepGuard, TrainingDiverged, grad_norm,
                        kept_checkpoint, warmup_factor)

STREAMS = ("fcls", "scls", "joint")  # Table V: first stream, second stream, joint confidence (Eq. 12-14)


@dataclass
class TrainConfig:
    data: str | Path
    output: str | Path
    train_split: str = "trainval"
    val_split: str = "test"
    arch: str = "resnet101"
    input_size: tuple[int, int] = (448, 448)
    epochs: int = 60
    batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step: int = 20
    lr_gamma: float = 0.1
    alpha: float = 0.5
    beta: float = 0.05
    head: str = "der"
    workers: int = 2
    resume: str | Path | None = None
    pretrained: bool = False
    backbone_weights: str | Path | None = None
    seed: int = 0
    data_format: str | None = None
    # None: the checkpoint's value on --resume, else the default (stability.py says why clipping is on).
    clip_grad: float | None = None  # max gradient L2 norm; 0 = no clipping
    warmup_epochs: float | None = None  # linear per-step warm-up of the learning rate; 0 = none
    max_bad_steps: int = DEFAULT_MAX_BAD_STEPS  # this many non-finite steps in a row abort the run
    amp: str | None = None  # mixed precision of the training forward pass: "off", "bf16", "fp16" (amp.py)
    decode: str = "full"  # the card's image decoding: "draft" shrinks JPEGs on load, in training and every runtime
    embed_loss: str = "der"  # "triplet": Table VI's D + triplet loss replaces Eq. 7 + Eq. 10 (losses.triplet_loss)
    triplet_margin: float = 1.0
    precise_bn: int = 0  # after every epoch, re-estimate BN statistics on this many training images (batchnorm.py)

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise DerError(f"unknown --arch {self.arch!r}; use one of {', '.join(ARCHS)}")
        if self.head not in HEADS:
            raise DerError(f"unknown --head {self.head!r}; use one of {', '.join(HEADS)}")
        size = tuple(self.input_size)
        stride = backbones.spec(self.arch).stride  # X must keep at least one cell
        if len(size) != 2 or min(size) < stride:
            raise DerError(f"--input-size {'x'.join(map(str, size))} is too small; {self.arch} needs at least "
                           f"{stride}x{stride} (its stride)")
        checks = [(self.epochs >= 1, "--epochs must be at least 1"), (self.batch_size >= 1, "--batch-size must be at least 1"),
                  (self.lr > 0, "--lr must be positive"), (self.lr_step >= 1, "--lr-step must be at least 1"),
                  (self.momentum >= 0 and self.weight_decay >= 0, "--momentum and --weight-decay must be >= 0"),
                  (self.alpha >= 0 and self.beta >= 0, "--alpha and --beta must be >= 0"),
                  (self.workers >= 0, "--workers must be >= 0"),
                  ((self.clip_grad or 0) >= 0, "--clip-grad must be >= 0 (0 = no clipping)"),
                  ((self.warmup_epochs or 0) >= 0, "--warmup-epochs must be >= 0"),
                  (self.max_bad_steps >= 1, "--max-bad-steps must be at least 1"),
                  (self.amp in (None, *amp_.MODES), f"unknown --amp {self.amp!r}; use one of {', '.join(amp_.MODES)}"),
                  (self.embed_loss in EMBED_LOSSES, f"unknown --embed-loss {self.embed_loss!r}; use one of {', '.join(EMBED_LOSSES)}"),
                  (self.triplet_margin > 0, "--triplet-margin must be positive"),
                  (self.precise_bn >= 0, "--precise-bn must be >= 0 (0 = off)"),
                  (self.decode in DECODE_MODES, f"unknown --decode {self.decode!r}; use one of {', '.join(DECODE_MODES)}"),
                  (not (self.pretrained and self.backbone_weights), "give either --pretrained or --backbone-weights, not both")]
        for ok, message in checks:
            if not ok:
                raise DerError(message)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str/int/float/list/None) so checkpoints load with weights_only=True."""
        out = dataclasses.asdict(self)
        for key in ("data", "output", "resume", "backbone_weights"):
            out[key] = None if out[key] is None else str(out[key])
        out["input_size"] = [int(v) for v in self.input_size]
        return out


@dataclass
class TrainResult:
    best_map: float
    last_map: float
    best_path: Path
    last_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)


def last_path_for(output: str | Path) -> Path:
    """model.pt -> model.last.pt"""
    output = Path(output)
    return output.with_name(f"{output.stem}.last{output.suffix or '.pt'}")


def stream_maps(logits: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
    """mAP (Eq. 18) of each available stream; AP is rank-based, so logits and probabilities agree."""
    maps = {}
    for name in STREAMS:
        if name in logits:
            ap = average_precision(logits[name], targets)
            if np.all(np.isnan(ap)):
                raise DatasetError("validation split has no positive label at all; mAP is undefined")
            maps[name] = float(np.nanmean(ap))
    return maps


def _predict(model, loader, env: ddp.DistEnv, total: int) -> dict[str, np.ndarray]:
    model = getattr(model, "module", model)
    model.eval()
    indices, rows = [], {}
    with torch.no_grad():
        for batch in track(loader, "validate"):
            check_batch(batch)
            out = model(batch.images.to(env.device))
            streams = {"fcls": out.fcls, "scls": out.scls, "joint": out.logits}
            for name, value in streams.items():
                if value is not None:
                    rows.setdefault(name, []).append(value.float().cpu().numpy())
            indices.append(batch.indices.numpy())
    stacked = {k: np.concatenate(v) for k, v in rows.items()}
    return ddp.gather_rows(env, np.concatenate(indices), stacked, total)


def predict_scores(model: DER, dataset, card: ModelCard, batch_size: int = 32, *, workers: int = 0):
    """Logits per stream ("fcls", "scls" unless baseline, "joint") for every image, in dataset order, and
    the dataset's int8 targets. Preprocessing is the core's (der_deploy.images), as in deployment."""
    device = next(model.parameters()).device
    loader = make_loader(EvalImages(dataset, card), batch_size, workers=workers)
    return _predict(model, loader, ddp.DistEnv(device=device), len(dataset)), dataset.targets()


def build_model(cfg: TrainConfig, num_classes: int) -> DER:
    weights = "DEFAULT" if cfg.pretrained else None
    try:
        model = DER(num_classes, cfg.arch, weights=weights, input_size=tuple(cfg.input_size), head=cfg.head)
    except DerError:
        raise
    except Exception as err:
        if not cfg.pretrained:
            raise
        reason = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise DerError(f"cannot get ImageNet weights for {cfg.arch} from torchvision ({reason}); offline, save "
                       f"them elsewhere and pass --backbone-weights FILE") from None
    if cfg.backbone_weights:
        load_backbone_weights(model, cfg.backbone_weights)
    return model


def make_card(cfg: TrainConfig, dataset) -> ModelCard:
    card = ModelCard(classes=list(dataset.classes), arch=cfg.arch, input_size=tuple(int(v) for v in cfg.input_size),
                     decode=cfg.decode)
    card.provenance["data"] = {"path": str(Path(cfg.data).resolve()), "name": dataset.name, "format": dataset.format,
                               "split": cfg.train_split, "val_split": cfg.val_split}
    return card


def _resume(cfg: TrainConfig, model: DER, optimizer, scheduler, card: ModelCard):
    path = Path(cfg.resume)
    data = read_checkpoint(path)
    for key, have, want in (("arch", data["arch"], cfg.arch), ("head", data["head"], cfg.head),
                            ("input size", list(data["input_size"]), list(cfg.input_size)),
                            ("classes", data["card"].get("classes"), card.classes),
                            ("decode", data["card"].get("decode", "full"), card.decode),
                            ("embed loss", (data.get("config") or {}).get("embed_loss", "der"), cfg.embed_loss)):
        if have != want:
            raise CheckpointError(f"{path}: was trained with {key} {have}, this run has {want}; resume with the same options")
    missing = [k for k in ("optimizer", "scheduler", "epoch", "history") if k not in data]
    if missing:
        raise CheckpointError(f"{path}: has no {', '.join(missing)}; cannot resume from it (pass a der-train checkpoint)")
    try:
        model.load_state_dict(data["state_dict"])
        optimizer.load_state_dict(data["optimizer"])
        scheduler.load_state_dict(data["scheduler"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: state does not match this model ({str(err).strip().splitlines()[0][:160]})") from None
    if "rng" in data:
        torch.set_rng_state(data["rng"])
    epoch = int(data["epoch"])
    if epoch >= cfg.epochs:
        raise DerError(f"{path}: already trained for {epoch} epochs; raise --epochs above {epoch} to continue")
    return epoch, data.get("best"), list(data["history"]), dict(data.get("config") or {}), data.get("scaler")


def _stability_settings(cfg: TrainConfig, saved: dict[str, Any] | None) -> TrainConfig:
    """Fill unset --clip-grad/--warmup-epochs from the resumed checkpoint's config (``saved``; None for a fresh
    run), else the defaults. Checkpoints from before these options trained without clipping or warm-up."""
    saved = {} if saved is None else {"clip_grad": 0.0, "warmup_epochs": 0.0, **saved}
    clip = cfg.clip_grad if cfg.clip_grad is not None else saved.get("clip_grad", DEFAULT_CLIP_GRAD)
    warmup = cfg.warmup_epochs if cfg.warmup_epochs is not None else saved.get("warmup_epochs", 0.0)
    return dataclasses.replace(cfg, clip_grad=float(clip or 0.0), warmup_epochs=float(warmup or 0.0))


def _set_threads(env: ddp.DistEnv) -> None:
    # Processes on one machine share its cores; oversubscription makes every rank slower.
    share = max(1, (os.cpu_count() or 1) // env.local_world_size)
    torch.set_num_threads(min(torch.get_num_threads(), share))


def _train_epoch(net, loader, optimizer, cfg: TrainConfig, env: ddp.DistEnv, epoch: int, guard: StepGuard,
                 good: Path, precision: amp_.Precision | None = None) -> dict[str, float]:
    """One epoch; ``good`` is the checkpoint that a divergence leaves as the last good one. ``precision``
    carries the fp16 loss scale from epoch to epoch (default: a fresh one for ``cfg.amp``)."""
    net.train()
    precision = precision or amp_.Precision(cfg.amp, env.device)
    # loss, cls, lce, rank (image-weighted), images, skipped steps, steps the fp16 loss scaler skipped
    sums = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    bases = [group["lr"] for group in optimizer.param_groups]  # this epoch's step-schedule rates
    steps = len(loader)
    warmup_steps = round(cfg.warmup_epochs * steps)
    lrs = []
    for i, batch in enumerate(track(loader, f"epoch {epoch + 1}/{cfg.epochs}")):
        check_batch(batch)
        factor = warmup_factor(epoch * steps + i, warmup_steps)
        for group, base in zip(optimizer.param_groups, bases):
            group["lr"] = base * factor
        lrs.append(bases[0] * factor)
        guard.before_forward()
        with precision.autocast():
            out = net(batch.images.to(env.device))
        # The losses run outside autocast on float32 copies of the outputs (Precision.float32 says why).
        parts = der_loss(precision.float32(out), batch.targets.to(env.device), alpha=cfg.alpha, beta=cfg.beta,
                         embed_loss=cfg.embed_loss, margin=cfg.triplet_margin)
        optimizer.zero_grad(set_to_none=True)
        precision.backward(parts.total)  # also on a bad loss: under DDP every rank must join the all-reduce
        precision.unscale(optimizer)
        norm = float(grad_norm(net.parameters(), cfg.clip_grad))
        ok = guard.check(float(parts.total.detach()), norm, scaled=precision.scaler is not None)
        if not ddp.all_agree(env, ok):
            precision.skipped()
            sums[5] += 1
            if guard.skip(optimizer):
                raise TrainingDiverged(
                    f"training diverged: {guard.in_a_row} steps in a row had a non-finite loss or gradient "
                    f"(epoch {epoch + 1}, step {i + 1}: {guard.last_bad or 'on another rank'}); "
                    f"{kept_checkpoint(good, epoch)}")
            continue
        if precision.step(optimizer):
            guard.good()
        else:
            sums[6] += 1  # fp16 overflow: the scaler skipped the update and lowered its scale (amp.py)
        n = len(batch.indices)
        for k, part in enumerate(parts):
            sums[k] += float(part.detach()) * n
        sums[4] += n
    for group, base in zip(optimizer.param_groups, bases):
        group["lr"] = base  # the step scheduler scales the stored rate
    total, cls, lce, rank, n, skipped, scaler_skipped = ddp.all_sum(env, sums)
    skipped /= env.world_size  # every rank counted the same skips
    scaler_skipped /= env.world_size
    n = n if n > 0 else float("nan")  # every step skipped: no loss to report
    return {"loss": total / n, "cls": cls / n, "lce": lce / n, "rank": rank / n, "skipped": int(skipped),
            "scaler_skipped": int(scaler_skipped),
            "lr": lrs[-1] if lrs else bases[0], "lr_first": lrs[0] if lrs else bases[0]}


def train(cfg: TrainConfig) -> TrainResult:
    """Train DER per ``cfg``; under torchrun, one call per process (DDP). Returns the same result on every rank."""
    cfg.validate()
    env = ddp.setup()
    try:
        return _train(cfg, env)
    except KeyboardInterrupt:
        if env.is_main:
            last = last_path_for(cfg.output)
            where = f"last complete epoch is in {last}; continue with --resume {last}" if last.exists() else "no epoch completed"
            err_console.print(f"interrupted: {where}")
        raise
    finally:
        ddp.cleanup(env)


def _train(cfg: TrainConfig, env: ddp.DistEnv) -> TrainResult:
    if cfg.amp is not None:
        amp_.check(cfg.amp, env.device)  # before any work: no silent float32 run, no late refusal
    _set_threads(env)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    output = check_writable(cfg.output)
    last = last_path_for(output)
    train_ds = open_dataset(cfg.data, cfg.train_split, format=cfg.data_format)
    val_ds = open_dataset(cfg.data, cfg.val_split, format=cfg.data_format)
    if len(train_ds) == 0 or len(val_ds) == 0:
        empty = cfg.train_split if len(train_ds) == 0 else cfg.val_split
        raise DatasetError(f"{cfg.data}: split {empty!r} has no images; choose another split")
    if list(val_ds.classes) != list(train_ds.classes):
        raise DatasetError(f"{cfg.data}: splits {cfg.train_split!r} and {cfg.val_split!r} have different class lists")
    card = make_card(cfg, train_ds)
    model = build_model(cfg, len(train_ds.classes)).to(env.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    start, best, history, saved, scaler_state = 0, None, [], None, None
    if cfg.resume:
        start, best, history, saved, scaler_state = _resume(cfg, model, optimizer, scheduler, card)
        if best is not None and not output.exists():
            best = None  # the best file of that run is elsewhere: track a new best for this output
    requested = cfg.amp
    cfg = dataclasses.replace(_stability_settings(cfg, saved), amp=amp_.resolve(cfg.amp, saved))
    amp_.check(cfg.amp, env.device, cfg.resume if requested is None else None)  # e.g. fp16 resumed on a CPU
    precision = amp_.Precision(cfg.amp, env.device)
    precision.load_state_dict(scaler_state)  # fp16 -> fp16: continue with the loss scale the run had reached
    guard = StepGuard(model, cfg.max_bad_steps)
    net = ddp.wrap(model, env)

    train_images = TrainImages(train_ds, card, seed=cfg.seed)
    train_sampler = ddp.sampler(train_images, env, shuffle=True, seed=cfg.seed)
    # A lone last sample would make BatchNorm fail (one value per channel at small inputs).
    drop_last = train_sampler.num_samples % cfg.batch_size == 1 and train_sampler.num_samples > 1
    train_loader = make_loader(train_images, cfg.batch_size, sampler=train_sampler, workers=cfg.workers, drop_last=drop_last)
    val_loader = make_loader(EvalImages(val_ds, card), cfg.batch_size,
                             sampler=ddp.sampler(val_ds, env, shuffle=False, seed=0), workers=cfg.workers)
    val_targets = val_ds.targets()
    if env.is_main:
        err_console.print(_header(cfg, env.device, env.world_size, len(train_ds), len(val_ds), start), markup=False,
                          highlight=False, soft_wrap=True)

    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        train_sampler.set_epoch(epoch)
        train_images.set_epoch(epoch)
        good = last if epoch > start or not cfg.resume else Path(cfg.resume)
        losses = _train_epoch(net, train_loader, optimizer, cfg, env, epoch, guard, good, precision)
        scheduler.step()
        if cfg.precise_bn:  # every rank sees the same first images, and rank 0's result is broadcast anyway
            recalibrate_batchnorm(model, train_ds, card, batch_size=cfg.batch_size, max_images=cfg.precise_bn,
                                  workers=cfg.workers)
        ddp.sync_buffers(net, env)
        logits = _predict(net, val_loader, env, len(val_ds))
        if not all(np.isfinite(v).all() for v in logits.values()):
            # Finite but huge weights (an update just short of the guard) overflow in eval mode: keep the last
            # good checkpoint rather than save these.
            raise TrainingDiverged(f"training diverged: validation scores after epoch {epoch + 1} are not finite; "
                                   f"{kept_checkpoint(good, epoch)}")
        maps = stream_maps(logits, val_targets)
        record = {"epoch": epoch + 1, **losses, "map": maps, "time": time.perf_counter() - t0}
        history.append(record)
        is_best = best is None or maps["joint"] > best["map"]
        if is_best:
            best = {"epoch": epoch + 1, "map": maps["joint"], "maps": maps}
        if env.is_main:
            ap = average_precision(logits["joint"], val_targets)
            metrics = {"split": cfg.val_split, "epoch": epoch + 1, "map": maps["joint"], "maps": maps,
                       "ap": [float(v) for v in ap], "loss": losses}
            save_checkpoint(last, model, card, config=cfg.to_dict(), metrics=metrics, epoch=epoch + 1,
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            history=history, best=best, rng=torch.get_rng_state(),
                            **({"scaler": precision.state_dict()} if precision.scaler is not None else {}))
            if is_best:
                with atomic_path(output) as tmp:
                    shutil.copyfile(last, tmp)
            err_console.print(_summary(record, cfg.epochs, is_best, cfg.embed_loss), markup=False, highlight=False,
                              soft_wrap=True)
        ddp.barrier(env)
    return TrainResult(best_map=best["map"], last_map=history[-1]["map"]["joint"], best_path=output,
                       last_path=last, history=history)
