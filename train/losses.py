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
EMBED_LOSSES = ("der", "triplet")  # der: Eq. 7 + Eq. 10; triplet: Table VI's "D + Triplet loss"


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


def triplet_loss(a: torch.Tensor, targets: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Batch triplet loss with semi-hard negative mining on the label vectors (Table VI, refs. [39]-[41]).

    The label vectors are a_{i,c} for the *positive* labels of each image (absent and ignored classes have
    no object to embed). Every ordered pair (anchor a_{i,c}, positive a_{j,c}), i ≠ j, is one triplet; its
    negative is a label vector of another class (any image). Distances are squared Euclidean, as in Eq. 7.
    Negative choice per pair: the nearest semi-hard one (d_ap < d_an < d_ap + margin, as FaceNet's semi-hard
    rule, taking the nearest for determinism); when none is semi-hard, the hardest (nearest) negative, so
    that pairs whose negatives are all too close still get a gradient. Returns the mean of
    [d_ap − d_an + margin]₊ over the pairs; 0 (with a graph) when the batch has no pair or no negative.
    """
    pos = targets == 1
    vec = a[pos]  # N×D, row order = (image, class)
    img, cls = pos.nonzero(as_tuple=True)
    if vec.shape[0] < 2:
        return a.sum() * 0.0
    dist = (vec.unsqueeze(1) - vec.unsqueeze(0)).pow(2).sum(dim=-1)  # N×N; not cdist: its gradient is NaN at 0
    same = cls.unsqueeze(1) == cls.unsqueeze(0)
    pair = same & (img.unsqueeze(1) != img.unsqueeze(0))  # anchor x positive
    neg = ~same  # anchor x negative
    anchor, positive = pair.nonzero(as_tuple=True)
    if anchor.numel() == 0 or not neg.any():
        return a.sum() * 0.0
    with torch.no_grad():  # mining picks indices only; the loss is differentiated through the distances
        d_ap = dist[anchor, positive].unsqueeze(1)  # P×1
        d_an = dist[anchor]  # P×N
        inf = torch.full_like(d_an, float("inf"))
        cand = neg[anchor]
        semi = cand & (d_an > d_ap) & (d_an < d_ap + margin)
        nearest_semi = torch.where(semi, d_an, inf).argmin(dim=1)
        hardest = torch.where(cand, d_an, inf).argmin(dim=1)
        chosen = torch.where(semi.any(dim=1), nearest_semi, hardest)
    # With two or more classes present every anchor has a negative, so no pair is dropped here.
    return F.relu(dist[anchor, positive] - dist[anchor, chosen] + margin).mean()


def der_loss(output, targets: torch.Tensor, alpha: float = 0.5, beta: float = 0.05, *,
             embed_loss: str = "der", margin: float = 1.0) -> DERLoss:
    """Eq. 16: L = L_cls + α·L_lce + β·L_lr on a :class:`DEROutput`; the baseline head has only L_cls.

    ``embed_loss="triplet"`` replaces Eq. 7 + Eq. 10 with :func:`triplet_loss` (Table VI): L = L_cls + α·L_tri,
    reported in the ``lce`` field, with ``lr`` 0.
    """
    if embed_loss not in EMBED_LOSSES:
        raise ValueError(f"unknown embed loss {embed_loss!r}; use one of {', '.join(EMBED_LOSSES)}")
    cls = classification_loss(output.logits, targets)
    if output.embeddings is None:
        zero = cls.new_zeros(())
        return DERLoss(cls, cls, zero, zero)
    if embed_loss == "triplet":
        tri = triplet_loss(output.embeddings, targets, margin)
        return DERLoss(cls + alpha * tri, cls, tri, cls.new_zeros(()))
    lce = embedding_loss(output.embeddings, targets)
    lr = ranking_loss(output.embeddings, targets)
    return DERLoss(cls + alpha * lce + beta * lr, cls, lce, lr)
