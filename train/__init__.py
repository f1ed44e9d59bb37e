"""Training stage (PyTorch): the DER model, its losses, checkpoints and the training loop."""
from __future__ import annotations

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .engine import TrainConfig, TrainResult, predict_scores, train
from .losses import DERLoss, classification_loss, der_loss, embedding_loss, ranking_loss
from .model import DER, DEROutput, load_backbone_weights

__all__ = [
    "DER", "DEROutput", "DERLoss", "TrainConfig", "TrainResult", "classification_loss", "der_loss",
    "embedding_loss", "load_backbone_weights", "load_checkpoint", "predict_scores", "ranking_loss",
    "read_checkpoint", "save_checkpoint", "train",
]
