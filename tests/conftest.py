"""Session fixtures: one generated dataset and one briefly *trained* model, shared by every stage's tests.

Parity is measured on a trained model (a random one proves nothing), so the model is trained once per
test session. Sizes are small enough for 2 CPU cores.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from trained_cache import generated_voc, trained_model

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
    return generated_voc(TINY, tmp_path_factory, seed=0)


@pytest.fixture(scope="session")
def trained_ckpt(synth_voc, tmp_path_factory) -> Path:
    return trained_model(TINY, synth_voc, tmp_path_factory, name="tiny")


@pytest.fixture(scope="session")
def tiny_onnx(trained_ckpt, tmp_path_factory) -> Path:
    """FP32 ONNX of the trained tiny model, with the CADM output (heat maps)."""
    from der_deploy.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(trained_ckpt, out, cadm=True)


@pytest.fixture(scope="session")
def variants(tiny_onnx, synth_voc, tmp_path_factory) -> dict[str, Path]:
    """tiny_onnx and its FP16 and INT8 (U8S8, MinMax from 64 training images) files, made once per session."""
    from der_deploy.export.precision import convert_fp16
    from der_deploy.export.quantize import quantize_int8

    out = tmp_path_factory.mktemp("variants")
    return {
        "fp32": tiny_onnx,
        "fp16": convert_fp16(tiny_onnx, out / "tiny.fp16.onnx"),
        "int8": quantize_int8(tiny_onnx, out / "tiny.int8.onnx", synth_voc / "JPEGImages", calib_max=64),
    }
