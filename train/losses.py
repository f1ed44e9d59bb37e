"""DER's training losses (paper Eq. 7, 10, 15, 16), vectorised over the batch with label masks.

Targets are float tensors of 1 (positive, in S), 0 (negative, in S̄) and -1 (ignored: in neither set,
e.g. VOC "difficult" labels). Per image: ``ā`` is the mean of the positive label vectors; an image with
an empty S (for the ranking loss also an empty S̄) has no ``ā``/ranking and contributes exactly 0.
``reduction="mean"`` averages over *all* images of the batch, including those that contribute 0.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")


class DERLoss(NamedTuple):
    total: torch.Tensor  # Eq. 16
    cls: torch.Tensor  # L_cls, Eq. 15
    lce: torch.Tensor  # L_lce, Eq. 7 (0 for the baseline head)
    lr: torch.Tensor  # L_lr, Eq. 10 (0 for the baseline head)


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_image
    if reduction == "sum":
        return per_image.sum()
    if reduction == "mean":
        return per_image.mean()
    raise ValueError(f"unknown reduction {reduction!r}; use one of {', '.join(REDUCTIONS)}")


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 15: sigmoid cross-entropy summed over the classes; -1 labels are masked out."""
    known = (targets >= 0).to(logits.dtype)
    # The logits form (log-sum-exp) stays finite where log(sigmoid(x)) would underflow.
    per_label = F.binary_cross_entropy_with_logits(logits, targets.clamp(min=0).to(logits.dtype), reduction="none")
    return _reduce((per_label * known).sum(dim=1), reduction)


def _distances(a: torch.Tensor, targets: torch.Tensor):
    """Squared distances ‖a_c − ā‖² (B×C) and the masks of S, S̄ and |S|."""
    pos = targets == 1
    neg = targets == 0
    n_pos = pos.sum(dim=1)
    w = pos.to(a.dtype).unsqueeze(-1)
    abar = (a * w).sum(dim=1) / n_pos.clamp(min=1).to(a.dtype).unsqueeze(-1)  # B×D; 0 where S is empty
    dist = (a - abar.unsqueeze(1)).pow(2).sum(dim=-1)
    return dist, pos, neg, n_pos


def embedding_loss(a: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 7: Σ_{j∈S}‖a_j−ā‖² + Σ_{k∈S̄}[1−‖a_k−ā‖²]₊ per image; ``a`` is B×C×D (Eq. 3)."""
    dist, pos, neg, n_pos = _distances(a, targets)
    zero = torch.zeros_like(dist)
    per_image = torch.where(pos, dist, zero).sum(dim=1) + torch.where(neg, F.relu(1.0 - dist), zero).sum(dim=1)
    per_image = torch.where(n_pos > 0, per_image, torch.zeros_like(per_image))
    return _reduce(per_image, reduction)


def ranking_loss(a: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 10: [1 + max_{j∈S}‖a_j−ā‖² − min_{k∈S̄}‖a_k−ā‖²]₊ per image."""
    dist, pos, neg, n_pos = _distances(a, targets)
    # Distances are >= 0, so filling non-members with 0 leaves the max over S unchanged.
    far = torch.where(pos, dist, torch.zeros_like(dist)).amax(dim=1)
    near = torch.where(neg, dist, torch.full_like(dist, float("inf"))).amin(dim=1)
    valid = (n_pos > 0) & neg.any(dim=1)
    near = torch.where(valid, near, torch.zeros_like(near))  # keep inf out of the graph
    per_image = torch.where(valid, F.relu(1.0 + far - near), torch.zeros_like(far))
    return _reduce(per_image, reduction)


def der_loss(output, targets: torch.Tensor, alpha: float = 0.5, beta: float = 0.05) -> DERLoss:
    """Eq. 16: L = L_cls + α·L_lce + β·L_lr on a :class:`DEROutput`; the baseline head has only L_cls."""
    cls = classification_loss(output.logits, targets)
    if output.embeddings is None:
        zero = cls.new_zeros(())
        return DERLoss(cls, cls, zero, zero)
    lce = embedding_loss(output.embeddings, targets)
    lr = ranking_loss(output.embeddings, targets)
    return DERLoss(cls + alpha * lce + beta * lr, cls, lce, lr)
