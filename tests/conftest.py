"""Session fixtures: one generated dataset and one briefly *trained* model, shared by every stage's tests.

Parity is measured on a trained model (a random one proves nothing), so the model is trained once per
test session. Sizes are small enough for 2 CPU cores.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DER_NO_PROGRESS", "1")

# One place for the tiny model's recipe, so every test trains/exports the same thing.
# lr 0.05 makes the Eq. 7 term blow up (NaN in epoch 1) when training from scratch; 0.01 is the paper's.
# 800 images x 8 epochs is about 1-2 min on 2 cores and reaches ~0.6 mAP (chance ~0.4).
TINY = dict(arch="resnet18", input_size=(64, 64), classes=5, images=800, image_size=96, epochs=8, batch_size=16,
            lr=0.01, lr_step=6)


@pytest.fixture(scope="session")
def tiny_recipe() -> dict:
    return dict(TINY)


@pytest.fixture(scope="session")
def synth_voc(tmp_path_factory) -> Path:
    from der_deploy.synth import generate

    out = tmp_path_factory.mktemp("synth") / "voc"
    return generate(out, classes=TINY["classes"], images=TINY["images"], seed=0, size=TINY["image_size"])


@pytest.fixture(scope="session")
def trained_ckpt(synth_voc, tmp_path_factory) -> Path:
    from der_deploy.train.engine import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    cfg = TrainConfig(
        data=synth_voc, output=out, arch=TINY["arch"], input_size=TINY["input_size"], epochs=TINY["epochs"],
        batch_size=TINY["batch_size"], lr=TINY["lr"], lr_step=TINY["lr_step"], workers=0, seed=0,
    )
    result = train(cfg)
    return result.best_path


@pytest.fixture(scope="session")
def tiny_onnx(trained_ckpt, tmp_path_factory) -> Path:
    """FP32 ONNX of the trained tiny model, with the CADM output (heat maps)."""
    from der_deploy.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(trained_ckpt, out, cadm=True)
