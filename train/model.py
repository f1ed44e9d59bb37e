"""The DER model (paper §III): backbone -> X; stream 1 = GMP + FC; CADMs A = θᵀX; stream 2 = GMP(A)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from der_deploy.errors import CheckpointError

from . import backbones

ARCHS = backbones.ARCHS  # checkpoint.py validates a checkpoint's arch against this name
HEADS = ("der", "baseline")


class DEROutput(NamedTuple):
    logits: torch.Tensor  # ŷ, Eq. 14 (for the baseline head: ŷ_fcls)
    fcls: torch.Tensor  # ŷ_fcls, Eq. 12
    scls: torch.Tensor | None  # ŷ_scls, Eq. 13
    cadm: torch.Tensor | None  # A = θᵀX, Eq. 2, B×C×h×w, no bias
    embeddings: torch.Tensor | None  # a, Eq. 3, B×C×(h·w)


def feature_size(input_size: tuple[int, int], arch: str = "resnet101") -> tuple[int, int]:
    """Spatial size (h, w) of X for ``arch`` at ``input_size`` (backbones.py: stride and rounding)."""
    return backbones.spec(arch).map_size(input_size)


def build_backbone(arch: str, weights=None) -> tuple[nn.Module, int]:
    """The torchvision trunk of ``arch`` up to X (backbones.py), and its channel count d."""
    trunk, entry = backbones.build(arch, weights)
    return trunk, entry.channels


class DER(nn.Module):
    """DER for multi-label recognition.

    ``head="der"`` is the paper's model; ``head="baseline"`` is GMP + FC only (Table IV, first row).
    ``weights`` is passed to torchvision (e.g. ``"DEFAULT"`` for ImageNet weights).
    """

    def __init__(self, num_classes: int, arch: str = "resnet101", *, weights=None,
                 input_size: tuple[int, int] = (448, 448), head: str = "der"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; use one of {', '.join(HEADS)}")
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        self.arch, self.head, self.num_classes = arch, head, num_classes
        self.input_size = tuple(input_size)
        self.backbone, self.feature_dim = build_backbone(arch, weights)
        self.classifier = nn.Linear(self.feature_dim, num_classes)  # weight is θᵀ (C×d), bias is b
        h, w = feature_size(self.input_size, arch)
        self.map_size = (h, w)
        hw = h * w
        # f_embed: two FC layers of width h·w with a ReLU between (§IV-B); training-only.
        self.embed = nn.Sequential(nn.Linear(hw, hw), nn.ReLU(inplace=True), nn.Linear(hw, hw)) if head == "der" else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, feats: torch.Tensor) -> DEROutput:
        fcls = self.classifier(feats.amax(dim=(2, 3)))  # Eq. 12
        if self.head == "baseline":
            return DEROutput(fcls, fcls, None, None, None)
        cadm = torch.einsum("cd,bdhw->bchw", self.classifier.weight, feats)  # Eq. 2
        scls = cadm.amax(dim=(2, 3))  # Eq. 13
        logits = 0.5 * (fcls + scls)  # Eq. 14
        flat = cadm.flatten(2)
        if flat.shape[-1] != self.embed[0].in_features:
            raise ValueError(
                f"input gives {tuple(cadm.shape[2:])} CADMs but f_embed was built for {self.map_size}; "
                f"feed {self.input_size} inputs"
            )
        return DEROutput(logits, fcls, scls, cadm, self.embed(flat))  # Eq. 3

    def forward(self, x: torch.Tensor) -> DEROutput:
        return self.forward_head(self.forward_features(x))


def load_backbone_weights(model: DER, path) -> None:
    """Load a local torchvision state dict of ``model.arch`` (e.g. ImageNet weights saved offline) into the trunk.

    Classifier keys (``fc.*`` / ``classifier.*``: ImageNet's 1000-way head) are ignored; the trunk's must match
    exactly (backbones.py maps torchvision's key names onto the trunk's).
    """
    from pathlib import Path

    from .safe_load import torch_load

    path = Path(path)
    hint = f"pass a torchvision {model.arch} state dict"
    state = torch_load(path, f"backbone weights file not found; {hint}",
                       "cannot read backbone weights ({reason}); " + hint)
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CheckpointError(f"{path}: not a state dict of tensors; pass a torchvision {model.arch} state dict (model.state_dict())")
    rename = backbones.spec(model.arch).rename
    mapped, unexpected = {}, []
    for key, value in state.items():
        key = key.removeprefix("module.")
        ours = rename(key)
        if ours is not None:
            mapped[ours] = value
    expected = model.backbone.state_dict()
    missing = [k for k in expected if k not in mapped]
    wrong = [k for k, v in mapped.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    unexpected += [k for k in mapped if k not in expected]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if keys
        )
        raise CheckpointError(f"{path}: not a torchvision {model.arch} state dict ({detail}); pass weights of the same --arch")
    model.backbone.load_state_dict(mapped)
