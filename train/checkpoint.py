"""Checkpoints are plain dicts (tensors, numbers, strings) so they load with ``weights_only=True``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import CardError, CheckpointError
from der_deploy.fileio import atomic_path

from .model import ARCHS, DER, HEADS
from .safe_load import torch_load

FORMAT = "der-deploy/checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model: DER, card: ModelCard, **extra: Any) -> Path:
    """Write ``model``'s weights, its card and any ``extra`` (config, metrics, epoch, optimizer) atomically."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": model.arch,
        "head": model.head,
        "num_classes": model.num_classes,
        "input_size": list(model.input_size),
        "card": card.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and sanity-check the raw checkpoint dict (no model built)."""
    path = Path(path)
    data = torch_load(path, "no such checkpoint file",
                      "not a der-deploy checkpoint ({reason}); pass a file written by der-train")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a der-deploy checkpoint; pass a file written by der-train")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')!r} is not supported; retrain or upgrade der-deploy")
    if data.get("arch") not in ARCHS:
        raise CheckpointError(f"{path}: unknown architecture {data.get('arch')!r}; supported: {', '.join(ARCHS)}")
    if data.get("head") not in HEADS:
        raise CheckpointError(f"{path}: unknown head {data.get('head')!r}; supported: {', '.join(HEADS)}")
    return data


def load_checkpoint(path: str | Path, *, data: dict[str, Any] | None = None) -> tuple[DER, ModelCard]:
    """Rebuild the model (eval mode, CPU) and its card from a checkpoint written by :func:`save_checkpoint`."""
    data = read_checkpoint(path) if data is None else data
    try:
        card = ModelCard.from_dict(data["card"])
    except (CardError, KeyError) as err:
        raise CheckpointError(f"{path}: bad model card in checkpoint ({err})") from None
    model = DER(int(data["num_classes"]), data["arch"], input_size=tuple(data["input_size"]), head=data["head"])
    state = data.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: checkpoint has no state_dict")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: checkpoint does not match a {data['arch']} DER model ({first[:200]})") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing keys {', '.join(result.missing_keys[:4])}" + (" ..." if len(result.missing_keys) > 4 else ""))
        if result.unexpected_keys:
            parts.append(f"unexpected keys {', '.join(result.unexpected_keys[:4])}" + (" ..." if len(result.unexpected_keys) > 4 else ""))
        raise CheckpointError(f"{path}: checkpoint does not match a {data['arch']} DER model ({'; '.join(parts)})")
    model.eval()
    return model, card
