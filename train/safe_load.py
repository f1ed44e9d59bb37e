"""``torch.load(weights_only=True)`` with one-line errors, for checkpoints and backbone weights alike (its own
module so that the model and the checkpoint code both use it without importing each other)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from der_deploy.errors import CheckpointError


def torch_load(path: Path, missing: str, unreadable: str) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors; ``unreadable`` may use ``{reason}``."""
    if not path.is_file():
        raise CheckpointError(f"{path}: {missing}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for foreign or corrupt files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointError(f"{path}: {unreadable.format(reason=reason)}") from None
