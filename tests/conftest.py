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


def _dev_cache(name: str) -> Path | None:
    """Developers only: DER_TEST_CACHE=DIR keeps the generated data and the trained model between pytest runs
    (CI never sets it, so CI always generates and trains afresh). The key is the recipe itself."""
    root = os.environ.get("DER_TEST_CACHE")
    if not root:
        return None
    import hashlib
    import json

    key = hashlib.sha256(json.dumps(TINY, sort_keys=True).encode()).hexdigest()[:12]
    return Path(root) / key / name


@pytest.fixture(scope="session")
def synth_voc(tmp_path_factory) -> Path:
    from der_deploy.synth import generate

    cached = _dev_cache("voc")
    if cached is not None and (cached / ".complete").exists():
        return cached
    out = cached if cached is not None else tmp_path_factory.mktemp("synth") / "voc"
    out.parent.mkdir(parents=True, exist_ok=True)
    generate(out, classes=TINY["classes"], images=TINY["images"], seed=0, size=TINY["image_size"],
             **({"overwrite": True} if cached is not None else {}))
    if cached is not None:
        (cached / ".complete").touch()
    return out


@pytest.fixture(scope="session")
def trained_ckpt(synth_voc, tmp_path_factory) -> Path:
    from der_deploy.train.engine import TrainConfig, train

    from der_deploy.train.engine import last_path_for

    cached = _dev_cache("model/tiny.pt")
    if cached is not None and cached.exists() and last_path_for(cached).exists():
        return cached
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
    # Train beside the cache entry and publish it whole, so a concurrent run never sees a half-trained model.
    out = cached.with_name(f"tiny.{os.getpid()}.pt") if cached is not None else tmp_path_factory.mktemp("model") / "tiny.pt"
    cfg = TrainConfig(
        data=synth_voc, output=out, arch=TINY["arch"], input_size=TINY["input_size"], epochs=TINY["epochs"],
        batch_size=TINY["batch_size"], lr=TINY["lr"], lr_step=TINY["lr_step"], workers=0, seed=0,
    )
    result = train(cfg)
    if cached is not None:  # the last checkpoint too (tests read its history), published before the best
        os.replace(result.last_path, last_path_for(cached))
        os.replace(result.best_path, cached)
        return cached
    return result.best_path


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
