"""Backbone registry (train/backbones.py): every --arch builds, X has the declared channels and stride, DER's
outputs follow from it, torchvision state dicts load, and ResNet checkpoints keep their key names."""
from __future__ import annotations

import pytest
import torch
import torchvision

from der_deploy.errors import CheckpointError, DerError
from der_deploy.train import backbones
from der_deploy.train.model import ARCHS, DER, feature_size, load_backbone_weights

C = 3
SIZE = (64, 64)


def test_registry_covers_the_issue():
    for name in ("resnet18", "resnet152", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "convnext_tiny",
                 "efficientnet_b0", "efficientnet_v2_s", "regnet_y_400mf", "mobilenet_v3_small", "mobilenet_v3_large"):
        assert name in ARCHS


@pytest.mark.parametrize("arch", ARCHS)
def test_every_entry_builds_with_declared_x(arch):
    entry = backbones.spec(arch)
    torch.manual_seed(0)
    model = DER(C, arch, input_size=SIZE).eval()
    h, w = SIZE[0] // entry.stride, SIZE[1] // entry.stride  # 64 is a multiple of every stride
    assert model.feature_dim == entry.channels and model.map_size == (h, w) == feature_size(SIZE, arch)
    assert model.embed[0].in_features == h * w  # f_embed's width follows from the input size
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        X = model.forward_features(x)
        out = model.forward_head(X)
    assert X.shape == (2, entry.channels, h, w)
    assert out.logits.shape == out.fcls.shape == out.scls.shape == (2, C)
    assert out.cadm.shape == (2, C, h, w) and out.embeddings.shape == (2, C, h * w)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("arch, size", [("resnet18", (72, 100)), ("vgg16", (72, 100)), ("convnext_tiny", (72, 100)),
                                        ("mobilenet_v3_small", (72, 100))])
def test_map_size_rounding_at_odd_sizes(arch, size):
    trunk, entry = backbones.build(arch)
    with torch.no_grad():
        X = trunk.eval()(torch.randn(1, 3, *size))
    assert tuple(X.shape[2:]) == entry.map_size(size)


def test_resnet_checkpoint_keys_unchanged():
    # checkpoints of resnet18..152 written before the registry must still load
    keys = DER(C, "resnet18", input_size=SIZE).state_dict().keys()
    for key in ("backbone.0.weight", "backbone.1.running_var", "backbone.4.0.conv1.weight", "backbone.7.1.bn2.bias",
                "classifier.weight", "embed.0.weight", "embed.2.bias"):
        assert key in keys


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "regnet_y_400mf", "vgg16_bn"])
def test_backbone_weights_round_trip(tmp_path, arch):
    torch.manual_seed(42)
    net = getattr(torchvision.models, arch)()  # random init: no network here
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_()  # distinguishable from a fresh init
    path = tmp_path / f"{arch}.pth"
    torch.save(net.state_dict(), path)
    torch.manual_seed(0)
    model = DER(C, arch, input_size=SIZE)
    load_backbone_weights(model, path)
    entry = backbones.spec(arch)
    theirs = {entry.rename(k): v for k, v in net.state_dict().items() if entry.rename(k) is not None}
    ours = model.backbone.state_dict()
    assert set(ours) <= set(theirs)
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key
    # same numbers through the trunk as torchvision's own model up to X
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        assert torch.equal(model.eval().forward_features(x), entry.trunk(net.eval())(x))


def test_backbone_weights_of_another_arch_are_refused(tmp_path):
    path = tmp_path / "mnv3l.pth"
    torch.save(torchvision.models.mobilenet_v3_large().state_dict(), path)
    model = DER(C, "mobilenet_v3_small", input_size=SIZE)
    with pytest.raises(CheckpointError, match=r"mnv3l\.pth: not a torchvision mobilenet_v3_small state dict") as info:
        load_backbone_weights(model, path)
    assert "\n" not in str(info.value)


def test_unknown_arch_is_one_line(tmp_path):
    from der_deploy.train.engine import TrainConfig

    with pytest.raises(DerError, match="unknown --arch 'vgg13'") as info:
        TrainConfig(data=tmp_path, output=tmp_path / "m.pt", arch="vgg13").validate()
    assert "\n" not in str(info.value) and "mobilenet_v3_small" in str(info.value)
    with pytest.raises(CheckpointError, match="unknown architecture"):
        DER(C, "vgg13")


@pytest.mark.slow
def test_tiny_mobilenet_exports_and_verifies(tmp_path):
    """A non-ResNet through der-export's FP32 ONNX path, verification included."""
    from der_deploy.artifact.card import ModelCard
    from der_deploy.export.onnx_export import export_onnx_report

    torch.manual_seed(0)
    arch = "mobilenet_v3_small"
    model = DER(C, arch, input_size=SIZE)
    # Fresh BN statistics make this trunk's X nearly constant; a few training-mode passes on inputs at the
    # scale of normalised images give it input-dependent, well-conditioned outputs (calibrated on [0, 1)
    # noise, the verifier's ±4 inputs blow activations up until PyTorch itself differs per batch size).
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, *SIZE) * 2)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(4, 3, *SIZE)).logits
    assert float((logits - logits[0]).abs().max()) > 1e-3
    card = ModelCard(classes=["a", "b", "c"], arch=arch, input_size=SIZE)
    report = export_onnx_report((model, card), tmp_path / "mnv3.onnx", batch=(1, 4), show=False)
    assert report.path.exists() and report.verification is not None
    assert all(o.passed for o in report.verification.outputs)
