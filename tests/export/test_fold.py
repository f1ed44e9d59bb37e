"""FusedHead / ExportModel equal the training model (paper Eq. 12-14) and hold θ once, without f_embed."""
import pytest
import torch

from der_deploy.export.fold import ExportModel, FusedHead
from der_models import random_der


def test_fused_head_equals_training_logits_and_cadm():
    model = random_der()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        logits, scores, cadm = ExportModel(model, cadm=True).eval()(x)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores, torch.sigmoid(ref.logits), atol=1e-6, rtol=1e-5)
    # 2·(½θ X) is exact in floating point; only the summation order of the matmul may differ
    torch.testing.assert_close(cadm, ref.cadm, atol=1e-5, rtol=1e-5)
    # independent check of Eq. 14 from the features
    with torch.no_grad():
        feats = model.forward_features(x)
        theta, b = model.classifier.weight, model.classifier.bias
        fcls = feats.amax(dim=(2, 3)) @ theta.T + b
        scls = torch.einsum("cd,ndhw->nchw", theta, feats).amax(dim=(2, 3))
    torch.testing.assert_close(logits, 0.5 * (fcls + scls), atol=1e-5, rtol=1e-5)


def test_non_square_input_and_feature_map():
    model = random_der(size=(96, 64))
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        ref = model(x)
        logits, _, cadm = ExportModel(model, cadm=True)(x)
    assert cadm.shape == (2, 5, 3, 2)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cadm, ref.cadm, atol=1e-5, rtol=1e-5)


def test_baseline_head_is_gmp_fc():
    model = random_der(head="baseline")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = ExportModel(model)(x)
    assert len(out) == 2
    torch.testing.assert_close(out[0], model(x).logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="baseline"):
        FusedHead(model, cadm=True)


def test_theta_stored_once_and_no_embed():
    model = random_der()
    net = ExportModel(model, cadm=True)
    tensors = dict(net.named_parameters()) | dict(net.named_buffers())
    theta = model.classifier.weight.detach()
    same = [n for n, t in tensors.items() if t.shape in (theta.shape, theta.T.shape)
            and any(torch.equal(t, v) for v in (theta, 0.5 * theta, theta.T, 0.5 * theta.T))]
    assert same == ["head.half_theta"]
    assert not any(n.startswith("embed") or ".embed" in n for n in tensors)
    hw = model.map_size[0] * model.map_size[1]
    assert not any(t.dim() == 2 and t.shape == (hw, hw) for t in tensors.values())
