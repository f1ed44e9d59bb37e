"""Training stage (PyTorch): the DER model, its losses, checkpoints and the training loop."""
from __future__ import annotations

from .checkpoint import load_checkpoint, save_checkpoint
from .model import DER, DEROutput

__all__ = ["DER", "DEROutput", "load_checkpoint", "save_checkpoint"]
