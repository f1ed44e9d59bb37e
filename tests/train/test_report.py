"""der-train's printed lines: the header names the loss recipe (Eq. 16 / triplet / baseline), the epoch line
names the terms that trained, and the --input-size error follows the backbone's stride, not ResNet's."""
from __future__ import annotations

import pytest

from der_deploy.errors import DerError
from der_deploy.train import backbones
from der_deploy.train.engine import TrainConfig
from der_deploy.train.report import header, summary


def _cfg(**kw):
    base = dict(data=".", output="m.pt", arch="mobilenet_v3_small", input_size=(64, 64), clip_grad=50.0,
                warmup_epochs=0.0)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("kw, want, absent", [
    ({}, "embed-loss der (alpha 0.5, beta 0.05)", "margin"),
    ({"embed_loss": "triplet", "alpha": 0.3, "triplet_margin": 0.25}, "embed-loss triplet (alpha 0.3, margin 0.25)",
     "beta"),
    ({"head": "baseline"}, "embed-loss none (baseline head", "alpha"),
])
def test_header_names_the_loss(kw, want, absent):
    line = header(_cfg(seed=7, **kw), "cpu", 1, 10, 5, 0)
    assert want in line and absent not in line
    assert line.startswith("training mobilenet_v3_small (") and "seed 7" in line and "\n" not in line


def test_epoch_line_names_the_trained_terms():
    record = {"epoch": 1, "loss": 1.5, "cls": 1.0, "lce": 0.25, "rank": 0.0, "map": {"joint": 0.5}, "time": 1.0,
              "lr": 0.01}
    assert "lce 0.2500 rank 0.0000" in summary(record, 2, True)
    line = summary(record, 2, False, "triplet")
    assert "triplet 0.2500" in line and "lce" not in line and "rank" not in line


@pytest.mark.parametrize("arch", ["vgg16", "mobilenet_v3_small", "resnet18"])
def test_input_size_error_uses_the_backbone_stride(arch):
    stride = backbones.spec(arch).stride
    _cfg(arch=arch, input_size=(stride, stride)).validate()  # one X cell is enough
    with pytest.raises(DerError) as info:
        _cfg(arch=arch, input_size=(stride - 1, 64)).validate()
    msg = str(info.value)
    assert f"{arch} needs at least {stride}x{stride}" in msg and "ResNet" not in msg and "\n" not in msg


def test_header_printed_by_der_train(tmp_path, capsys):
    """The real run prints it (stderr), triplet recipe included."""
    from der_deploy.synth import generate
    from der_deploy.train.engine import train

    data = generate(tmp_path / "voc", classes=3, images=24, seed=1, size=48)
    train(TrainConfig(data=data, output=tmp_path / "m.pt", arch="mobilenet_v3_small", input_size=(32, 32), epochs=1,
                      batch_size=8, workers=0, embed_loss="triplet", triplet_margin=0.5))
    err = capsys.readouterr().err
    assert "embed-loss triplet (alpha 0.5, margin 0.5)" in err and "triplet " in err.splitlines()[-1]


def test_cli_help_is_backbone_neutral_and_lists_precise_bn(tmp_path):
    from click.testing import CliRunner

    from der_deploy.cli.train import main

    out = CliRunner().invoke(main, ["--help"]).output
    assert "--precise-bn" in out and "backbone's stride" in out
    res = CliRunner().invoke(main, [str(tmp_path), "-o", str(tmp_path / "m.pt"), "--precise-bn", "-1"])
    assert res.exit_code != 0 and "precise-bn" in res.output
    res = CliRunner().invoke(main, [str(tmp_path), "-o", str(tmp_path / "m.pt"), "--arch", "vgg16",
                                    "--input-size", "12"])
    assert res.exit_code == 2 and "vgg16 needs at least 16x16" in res.output and "ResNet" not in res.output
