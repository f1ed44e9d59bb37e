"""The lines der-train prints: the run's header and one summary per epoch."""
from __future__ import annotations

from typing import Any

from .stability import StepGuard


def loss_recipe(head: str, embed_loss: str, alpha: float, beta: float, margin: float) -> str:
    """Which terms of Eq. 16 train this run, e.g. ``embed-loss der (alpha 0.5, beta 0.05)``."""
    if head == "baseline":
        return "embed-loss none (baseline head: L_cls only)"
    if embed_loss == "triplet":
        return f"embed-loss triplet (alpha {alpha:g}, margin {margin:g})"
    return f"embed-loss {embed_loss} (alpha {alpha:g}, beta {beta:g})"


def header(cfg, device: str, world_size: int, n_train: int, n_val: int, start: int) -> str:
    world = f" x {world_size} processes" if world_size > 1 else ""
    size = "x".join(str(int(v)) for v in cfg.input_size)
    recipe = loss_recipe(cfg.head, cfg.embed_loss, cfg.alpha, cfg.beta, cfg.triplet_margin)
    return (f"training {cfg.arch} ({cfg.head} head) at {size} on {device}{world}: {n_train} {cfg.train_split!r} "
            f"images, validating on {n_val} {cfg.val_split!r}; {recipe}; epochs {start + 1}-{cfg.epochs}, "
            f"batch {cfg.batch_size}, lr {cfg.lr:g}, clip-grad {cfg.clip_grad:g}, warm-up {cfg.warmup_epochs:g}, "
            f"amp {cfg.amp}, seed {cfg.seed}" + (f", precise-bn {cfg.precise_bn}" if cfg.precise_bn else ""))


def summary(record: dict[str, Any], epochs: int, is_best: bool, embed_loss: str = "der") -> str:
    maps = " ".join(f"{k} {100 * v:.2f}" for k, v in record["map"].items())
    lr = f"{record['lr']:.3g}"
    if record.get("lr_first", record["lr"]) != record["lr"]:
        lr = f"{record['lr_first']:.3g}->{lr} (warm-up)"
    skipped = f"  {StepGuard.describe(record['skipped'])}" if record.get("skipped") else ""
    if record.get("scaler_skipped"):
        skipped += f"  loss scaler skipped {record['scaler_skipped']}"
    # der_loss reports the triplet term in the lce field (losses.der_loss)
    terms = (f"triplet {record['lce']:.4f}" if embed_loss == "triplet"
             else f"lce {record['lce']:.4f} rank {record['rank']:.4f}")
    return (f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f} (cls {record['cls']:.4f} "
            f"{terms})  mAP {maps}  lr {lr}{skipped}  {record['time']:.1f}s{'  *best' if is_best else ''}")
