"""Backbone registry behind ``--arch``: which torchvision trunk gives X, with X's channels d and stride.

X is the last convolutional feature map before the classifier's global pooling (the paper's d×h×w map).
Each entry also says how its torchvision state dict maps onto the trunk, so ``--backbone-weights`` works
for every architecture, and how the map size rounds, so f_embed's width h·w follows from the input size.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from torch import nn

from der_deploy.errors import CheckpointError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str  # torchvision family, for messages
    channels: int  # d
    stride: int  # input pixels per X cell
    # Padded stride-2 convolutions round the size up at every stage; unpadded pools / patchify stems round down.
    # Either way the repeated halving composes to one ceil / floor division by the stride.
    ceil: bool
    trunk: Callable[[nn.Module], nn.Module]  # torchvision model -> module returning X
    rename: Callable[[str], str | None]  # torchvision state-dict key -> trunk key; None = classifier key, ignored

    def map_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        div = math.ceil if self.ceil else math.floor
        h, w = (div(int(v) / self.stride) for v in input_size)
        return h, w


# ResNet: DER.backbone has been an nn.Sequential of these modules since the first checkpoints; its
# numeric keys must stay as they are so that resnet18..152 checkpoints keep loading.
_RESNET_INDEX = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}


def _resnet_trunk(net: nn.Module) -> nn.Module:
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


def _resnet_rename(key: str) -> str | None:
    head, _, rest = key.partition(".")
    if head == "fc":
        return None
    return f"{_RESNET_INDEX[head]}.{rest}" if head in _RESNET_INDEX and rest else key


def _vgg_trunk(net: nn.Module) -> nn.Module:
    # Drop the last max pool: X is conv5's map (stride 16), as VGG-DER takes it before pooling.
    return net.features[:-1]


def _features_trunk(net: nn.Module) -> nn.Module:
    return net.features


def _regnet_trunk(net: nn.Module) -> nn.Module:
    # Same child names as torchvision's RegNet, so its state-dict keys map one to one.
    return nn.Sequential(OrderedDict(stem=net.stem, trunk_output=net.trunk_output))


def _prefixed(prefix: str, ignore: str) -> Callable[[str], str | None]:
    def rename(key: str) -> str | None:
        if key.startswith(ignore):
            return None
        return key[len(prefix):] if key.startswith(prefix) else key
    return rename


def _spec(name, family, channels, stride, ceil, trunk, rename):
    return name, BackboneSpec(name, family, channels, stride, ceil, trunk, rename)


_FEATURES = _prefixed("features.", "classifier.")
REGISTRY: dict[str, BackboneSpec] = dict([
    _spec("resnet18", "ResNet", 512, 32, True, _resnet_trunk, _resnet_rename),
    _spec("resnet34", "ResNet", 512, 32, True, _resnet_trunk, _resnet_rename),
    _spec("resnet50", "ResNet", 2048, 32, True, _resnet_trunk, _resnet_rename),
    _spec("resnet101", "ResNet", 2048, 32, True, _resnet_trunk, _resnet_rename),
    _spec("resnet152", "ResNet", 2048, 32, True, _resnet_trunk, _resnet_rename),
    _spec("vgg16", "VGG", 512, 16, False, _vgg_trunk, _FEATURES),
    _spec("vgg16_bn", "VGG", 512, 16, False, _vgg_trunk, _FEATURES),
    _spec("vgg19", "VGG", 512, 16, False, _vgg_trunk, _FEATURES),
    _spec("vgg19_bn", "VGG", 512, 16, False, _vgg_trunk, _FEATURES),
    _spec("convnext_tiny", "ConvNeXt", 768, 32, False, _features_trunk, _FEATURES),
    _spec("efficientnet_b0", "EfficientNet", 1280, 32, True, _features_trunk, _FEATURES),
    _spec("efficientnet_v2_s", "EfficientNetV2", 1280, 32, True, _features_trunk, _FEATURES),
    _spec("regnet_y_400mf", "RegNet", 440, 32, True, _regnet_trunk, _prefixed("", "fc.")),
    _spec("mobilenet_v3_small", "MobileNetV3", 576, 32, True, _features_trunk, _FEATURES),
    _spec("mobilenet_v3_large", "MobileNetV3", 960, 32, True, _features_trunk, _FEATURES),
])
ARCHS = tuple(REGISTRY)


def spec(arch: str) -> BackboneSpec:
    if arch not in REGISTRY:
        raise CheckpointError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")
    return REGISTRY[arch]


def build(arch: str, weights=None) -> tuple[nn.Module, BackboneSpec]:
    """The trunk that maps an image batch to X, and its spec. ``weights`` goes to torchvision ("DEFAULT")."""
    import torchvision

    entry = spec(arch)
    return entry.trunk(getattr(torchvision.models, arch)(weights=weights)), entry
