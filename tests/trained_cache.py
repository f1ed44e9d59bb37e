"""Generated data and briefly trained models for tests, each described by one recipe dict.

Developers only: DER_TEST_CACHE=DIR keeps them between pytest runs, keyed by the recipe itself, so changing a
recipe retrains. CI never sets it: there every session generates and trains afresh.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

DATA_KEYS = ("classes", "images", "image_size")
TRAIN_KEYS = ("arch", "input_size", "epochs", "batch_size", "lr", "lr_step", "seed", "precise_bn")


def dev_cache(recipe: dict, name: str, prefix: str = "") -> Path | None:
    root = os.environ.get("DER_TEST_CACHE")
    if not root:
        return None
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return Path(root) / f"{prefix}{key}" / name


def generated_voc(recipe: dict, tmp_path_factory, *, seed: int, prefix: str = "") -> Path:
    from der_deploy.synth import generate

    cached = dev_cache(recipe, "voc", prefix)
    if cached is not None and (cached / ".complete").exists():
        return cached
    out = cached if cached is not None else tmp_path_factory.mktemp("synth") / "voc"
    out.parent.mkdir(parents=True, exist_ok=True)
    generate(out, classes=recipe["classes"], images=recipe["images"], seed=seed, size=recipe["image_size"],
             overwrite=True)
    if cached is not None:
        (cached / ".complete").touch()
    return out


def trained_model(recipe: dict, data: Path, tmp_path_factory, *, name: str, prefix: str = "") -> Path:
    """der-train's best checkpoint for the recipe; its last checkpoint lies beside it (tests read its history)."""
    from der_deploy.train.engine import TrainConfig, last_path_for, train

    cached = dev_cache(recipe, f"model/{name}.pt", prefix)
    if cached is not None and cached.exists() and last_path_for(cached).exists():
        return cached
    folder = cached.parent if cached is not None else tmp_path_factory.mktemp("model")
    folder.mkdir(parents=True, exist_ok=True)
    # Trained under a private name and published whole, so a concurrent run never sees a half-trained model.
    out = folder / (f"{name}.{os.getpid()}.pt" if cached is not None else f"{name}.pt")
    result = train(TrainConfig(data=data, output=out, workers=0, **{k: recipe[k] for k in TRAIN_KEYS if k in recipe}))
    if cached is None:
        return result.best_path
    os.replace(result.last_path, last_path_for(cached))  # the last before the best: the best marks completeness
    os.replace(result.best_path, cached)
    return cached
