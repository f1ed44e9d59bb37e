"""DER model (paper Eq. 2, 3, 12-14, §IV-B) checked against independent computations."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from der_deploy.errors import CheckpointError, DerError
from der_deploy.train.model import DER, feature_size, load_backbone_weights

C = 5


def _model(size=(64, 64), head="der", seed=0):
    torch.manual_seed(seed)
    return DER(C, "resnet18", input_size=size, head=head).eval()


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_output_shapes(size):
    model = _model(size)
    h, w = feature_size(size)
    assert model.map_size == (h, w) == (size[0] // 32, size[1] // 32)
    with torch.no_grad():
        out = model(torch.randn(3, 3, *size))
    assert out.logits.shape == out.fcls.shape == out.scls.shape == (3, C)
    assert out.cadm.shape == (3, C, h, w)
    assert out.embeddings.shape == (3, C, h * w)
    assert model.feature_dim == 512 and model.classifier.weight.shape == (C, 512)


def test_streams_match_independent_computation():
    model = _model((64, 96))
    # Give the bias a clearly non-zero value so "no bias in the CADMs" is actually tested.
    with torch.no_grad():
        model.classifier.bias.copy_(torch.linspace(-2, 2, C))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        X = model.forward_features(x)
    B, d, h, w = X.shape
    W, b = model.classifier.weight.detach(), model.classifier.bias.detach()
    # Eq. 12: FC on the global max pool of X
    gmp = X.reshape(B, d, h * w).max(dim=2).values
    torch.testing.assert_close(out.fcls, gmp @ W.T + b, rtol=1e-5, atol=1e-5)
    # Eq. 1/2: A_c = θ_cᵀ X, looped per image, class and location; no bias.
    A = torch.zeros(B, C, h, w, dtype=torch.float64)
    for i in range(B):
        for c in range(C):
            for y in range(h):
                for z in range(w):
                    A[i, c, y, z] = (W[c].double() * X[i, :, y, z].double()).sum()
    torch.testing.assert_close(out.cadm.double(), A, rtol=1e-4, atol=1e-4)
    # Eq. 13: GMP over each CADM
    torch.testing.assert_close(out.scls.double(), A.flatten(2).max(dim=2).values, rtol=1e-4, atol=1e-4)
    # Eq. 14
    torch.testing.assert_close(out.logits, 0.5 * (out.fcls + out.scls))
    # Eq. 3: f_embed = Linear(hw, hw) -> ReLU -> Linear(hw, hw) on the flattened CADMs
    lin1, act, lin2 = model.embed
    assert isinstance(lin1, torch.nn.Linear) and isinstance(act, torch.nn.ReLU) and isinstance(lin2, torch.nn.Linear)
    assert (lin1.in_features, lin1.out_features, lin2.in_features, lin2.out_features) == (h * w,) * 4
    flat = out.cadm.reshape(B, C, h * w)
    ref = torch.relu(flat @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    torch.testing.assert_close(out.embeddings, ref, rtol=1e-5, atol=1e-5)


def test_baseline_head():
    model = _model(head="baseline")
    assert model.embed is None
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.scls is None and out.cadm is None and out.embeddings is None
    torch.testing.assert_close(out.logits, out.fcls)


def test_unknown_arch():
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet200'"):
        DER(C, "resnet200")


def _trunk_equals(model, net):
    pairs = [(model.backbone[0], net.conv1), (model.backbone[1], net.bn1), (model.backbone[4], net.layer1),
             (model.backbone[7], net.layer4)]
    for ours, theirs in pairs:
        for (k1, v1), (k2, v2) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert k1 == k2 and torch.equal(v1, v2), k1


@pytest.mark.parametrize("keep_fc", [True, False])
def test_backbone_weights_from_local_file(tmp_path, keep_fc):
    torch.manual_seed(123)
    net = torchvision.models.resnet18()
    with torch.no_grad():
        net.bn1.running_mean.uniform_()  # make buffers distinguishable from a fresh init too
    state = net.state_dict()
    if not keep_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    model = _model()
    load_backbone_weights(model, path)
    _trunk_equals(model, net)


def test_backbone_weights_errors(tmp_path):
    model = _model()
    wrong = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), wrong)
    with pytest.raises(CheckpointError, match=r"r34\.pth: not a torchvision resnet18 state dict"):
        load_backbone_weights(model, wrong)
    garbage = tmp_path / "junk.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"junk\.pth: cannot read backbone weights"):
        load_backbone_weights(model, garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_backbone_weights(model, tmp_path / "missing.pth")
    other = tmp_path / "dict.pth"
    torch.save({"epoch": 3}, other)
    with pytest.raises(CheckpointError, match=r"dict\.pth: not a state dict"):
        load_backbone_weights(model, other)


def test_pretrained_download_failure_is_one_clear_error(monkeypatch, tmp_path):
    from der_deploy.train.engine import TrainConfig, build_model

    real = torchvision.models.resnet18

    def offline(*, weights=None, **kw):
        if weights is not None:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return real(weights=None, **kw)

    monkeypatch.setattr(torchvision.models, "resnet18", offline)
    cfg = TrainConfig(data=tmp_path, output=tmp_path / "m.pt", arch="resnet18", input_size=(64, 64), pretrained=True)
    with pytest.raises(DerError) as info:
        build_model(cfg, C)
    message = str(info.value)
    assert "\n" not in message and "ImageNet weights for resnet18" in message and "--backbone-weights" in message
