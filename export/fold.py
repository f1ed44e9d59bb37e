"""Fold DER's two classification streams into one export-only head (paper Eq. 12-14).

At inference ŷ = ½(θᵀ·GMP(X) + b) + ½·GMP(θᵀX). Both streams multiply X by the same θ, so the head
appends GMP(X) to X's h·w columns and does ONE MatMul with ½θ: column h·w is ½θᵀ·GMP(X) (stream 1 without
bias), the others are ½θᵀX (the halved CADMs). θ is therefore stored once, as ½θ; scaling by a power of two
is exact in floating point, so 2·Z recovers the CADMs bit for bit. f_embed is training-only and not kept.
"""
from __future__ import annotations

import torch
from torch import nn


class FusedHead(nn.Module):
    """X (N, d, h, w) -> (logits, scores[, cadm]) with θ stored once.

    ``head="baseline"`` models have only stream 1: logits = θᵀ·GMP(X) + b.
    """

    def __init__(self, model, cadm: bool = False):
        super().__init__()
        self.kind = model.head
        self.with_cadm = bool(cadm) and self.kind == "der"
        if cadm and self.kind != "der":
            raise ValueError("a baseline (GMP + FC) model has no CADMs; export without cadm")
        theta = model.classifier.weight.detach().clone().float()  # θᵀ in the paper's notation: C×d
        bias = model.classifier.bias.detach().clone().float()
        if self.kind == "der":
            self.register_buffer("half_theta", theta * 0.5)
            self.register_buffer("half_bias", bias * 0.5)
        else:
            self.register_buffer("theta", theta)
            self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor):
        n, _, h, w = x.shape
        pooled = x.amax(dim=(2, 3))  # GMP(X), N×d
        if self.kind != "der":
            logits = torch.nn.functional.linear(pooled, self.theta, self.bias)
            return logits, torch.sigmoid(logits)
        hw = h * w
        cols = torch.cat([x.flatten(2), pooled.unsqueeze(-1)], dim=2)  # N×d×(hw+1)
        z = torch.matmul(self.half_theta, cols)  # N×C×(hw+1): one MatMul for both streams
        half_cadm, half_fcls = torch.split(z, [hw, 1], dim=2)
        logits = half_fcls.squeeze(2) + self.half_bias + half_cadm.amax(dim=2)
        scores = torch.sigmoid(logits)
        if not self.with_cadm:
            return logits, scores
        return logits, scores, (half_cadm * 2.0).reshape(n, -1, h, w)


class ExportModel(nn.Module):
    """Backbone + :class:`FusedHead`; holds no reference to f_embed, so its weights cannot leak into the graph."""

    def __init__(self, model, cadm: bool = False):
        super().__init__()
        self.backbone = model.backbone
        self.head = FusedHead(model, cadm=cadm)
        self.output_names = ["logits", "scores"] + (["cadm"] if self.head.with_cadm else [])

    def forward(self, images: torch.Tensor):
        return self.head(self.backbone(images))
