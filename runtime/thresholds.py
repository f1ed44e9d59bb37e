"""``der-eval --tune-thresholds``: per-class F1-optimal thresholds written into a new model card."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from der_deploy import metrics
from der_deploy.artifact.card import ONNX_METADATA_KEY, ModelCard
from der_deploy.fileio import atomic_path


def tuned_card(card: ModelCard, probs: np.ndarray, targets: np.ndarray, split: str | None = None) -> ModelCard:
    thresholds = metrics.best_f1_thresholds(probs, targets, default=0.5)
    provenance = {**card.provenance, "thresholds_tuned_on": split or "evaluation split"}
    return card.replace(thresholds=[round(float(t), 6) for t in thresholds], provenance=provenance)


def embed_card_onnx(src: Path, dst: Path, card: ModelCard) -> Path:
    """Copy an ONNX file with its model card replaced (weights untouched)."""
    import onnx

    model = onnx.load(str(src))
    props = [p for p in model.metadata_props if p.key != ONNX_METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, card.to_json(indent=None)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return dst


def write_tuned(engine: Path, card: ModelCard, probs: np.ndarray, targets: np.ndarray, split: str | None = None) -> dict[str, Any]:
    """Write ``<stem>.tuned.card.json`` and a ready-to-use engine carrying the tuned card."""
    new = tuned_card(card, probs, targets, split)
    stem = engine.with_suffix("")
    card_path = new.save(stem.with_name(stem.name + ".tuned.card.json"))
    written = {"card": str(card_path), "thresholds": dict(zip(new.classes, new.thresholds))}
    if engine.suffix == ".onnx":
        written["engine"] = str(embed_card_onnx(engine, stem.with_name(stem.name + ".tuned.onnx"), new))
    else:
        written["engine"] = str(copy_plan_with_card(engine, stem.with_name(stem.name + ".tuned.plan"), new))
    return written


def copy_plan_with_card(src: Path, dst: Path, card: ModelCard) -> Path:
    """Copy a plan byte for byte; its new sidecar differs from the old one only in the card."""
    import dataclasses

    from der_deploy.fileio import write_bytes

    from der_deploy.artifact.sidecar import read_sidecar, write_sidecar

    sidecar = read_sidecar(src)
    write_bytes(dst, src.read_bytes())
    write_sidecar(dst, dataclasses.replace(sidecar, card=card))
    return dst
