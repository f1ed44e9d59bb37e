"""Precise-BN re-estimation (train/batchnorm.py): the running statistics become the average of the batch
statistics with the final weights, computed independently here with hooks; mode and momenta are restored."""
from __future__ import annotations

import pytest
import torch

from der_deploy.artifact.card import ModelCard
from der_deploy.train.batchnorm import recalibrate_batchnorm
from der_deploy.train.model import DER


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    from der_deploy.synth import generate

    return generate(tmp_path_factory.mktemp("bn") / "voc", classes=3, images=30, seed=4, size=40)


def _model_and_card(voc):
    from der_deploy.datasets import open_dataset

    ds = open_dataset(voc, "trainval")
    torch.manual_seed(0)
    model = DER(3, "mobilenet_v3_small", input_size=(32, 32)).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(100.0)  # stale statistics, as after a short run
    return model, ModelCard(classes=list(ds.classes), arch="mobilenet_v3_small", input_size=(32, 32)), ds


def test_running_stats_become_the_batch_average(voc):
    model, card, ds = _model_and_card(voc)
    first = model.backbone[0][1]  # the stem's BatchNorm2d
    assert isinstance(first, torch.nn.BatchNorm2d)
    seen_means, seen_vars = [], []

    def hook(mod, inp, out):
        x = inp[0]
        seen_means.append(x.mean(dim=(0, 2, 3)))
        seen_vars.append(x.var(dim=(0, 2, 3), unbiased=True))

    momentum = first.momentum  # torchvision's MobileNetV3: 0.01
    handle = first.register_forward_hook(hook)
    n = recalibrate_batchnorm(model, ds, card, batch_size=8)
    handle.remove()
    assert n == len(ds) == 21 and len(seen_means) == 3  # 8 + 8 + 5
    torch.testing.assert_close(first.running_mean, torch.stack(seen_means).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first.running_var, torch.stack(seen_vars).mean(0), rtol=1e-5, atol=1e-6)
    assert not model.training and first.momentum == momentum == 0.01  # restored


def test_max_images_and_lone_last_image(voc):
    model, card, ds = _model_and_card(voc)
    assert recalibrate_batchnorm(model, ds, card, batch_size=4, max_images=9) == 8  # 4 + 4, then 1 is left out
    model.train()
    assert recalibrate_batchnorm(model, ds, card, batch_size=64, max_images=5) == 5 and model.training


def test_collapsed_outputs_recover(voc):
    """The measured failure: stale running variances squash eval-mode logits to a near constant."""
    model, card, ds = _model_and_card(voc)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        before = model(x).logits.std(0).max()
        recalibrate_batchnorm(model, ds, card)
        after = model(x).logits.std(0).max()
    assert after > 100 * before


@pytest.mark.parametrize("precise_bn", [16, 0])
def test_der_train_precise_bn_saves_re_estimated_statistics(voc, tmp_path, capsys, precise_bn):
    """--precise-bn N: the saved statistics are exactly a re-estimation with the saved weights on the first N
    training images; without it they are not (the control that makes this test able to fail)."""
    from der_deploy.datasets import open_dataset
    from der_deploy.train.checkpoint import load_checkpoint, read_checkpoint
    from der_deploy.train.engine import TrainConfig, train

    out = tmp_path / "m.pt"
    train(TrainConfig(data=voc, output=out, arch="mobilenet_v3_small", input_size=(32, 32), epochs=1, batch_size=8,
                      workers=0, precise_bn=precise_bn))
    assert ("precise-bn 16" in capsys.readouterr().err) == bool(precise_bn)
    last = out.with_name("m.last.pt")
    assert read_checkpoint(last)["config"]["precise_bn"] == precise_bn
    model, card = load_checkpoint(last)
    saved = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    recalibrate_batchnorm(model, open_dataset(voc, "trainval"), card, batch_size=8, max_images=16)
    again = {k: v for k, v in model.state_dict().items() if k in saved}
    same = all(torch.allclose(again[k], saved[k], rtol=1e-5, atol=1e-6) for k in saved)
    assert same == bool(precise_bn)
