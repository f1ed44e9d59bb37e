"""``der-eval``: accuracy of an engine on a labelled split, and its parity with the PyTorch checkpoint.

The engine and the reference see the *same* preprocessed batches (one decode, two forwards), so any
difference is the engine's: export, precision or backend -- unless their cards decode differently (a draft engine
vs a full-decoding checkpoint): then each decodes as its card says, and the difference includes the decoding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from der_deploy import metrics
from der_deploy.artifact.card import ModelCard
from der_deploy.artifact.keys import INT8_PLAN_KEY, PRECISION_KEY
from der_deploy.errors import DerError, EngineError

# |ΔmAP| budgets in mAP points (percent), per precision that ran: the file's, or OpenVINO's bf16/fp16 inference
# precision applied to an FP32 file (an INT8 file keeps the INT8 budget: its quantization dominates).
DEFAULT_BUDGETS = {"fp32": 0.05, "fp16": 0.3, "bf16": 0.3, "int8": 1.0}


class ParityError(DerError):
    """The engine's mAP (or a class's AP) moved more than its budget allows."""

    exit_code = 1


@dataclass
class Parity:
    reference_map: float
    delta_map_pt: float  # engine - reference, in points
    worst_class: str
    worst_delta_ap_pt: float
    flip_fraction: float  # share of (image, class) decisions that differ at the card's thresholds
    max_abs_score_diff: float
    budget_pt: float
    drop_class: str = ""  # the class that lost most AP (one-sided: a gain never fails a budget)
    drop_pt: float = 0.0  # its ΔAP, <= 0 when any class lost
    max_class_drop_pt: float | None = None  # --max-class-drop

    @property
    def map_passed(self) -> bool:
        return abs(self.delta_map_pt) <= self.budget_pt

    @property
    def class_passed(self) -> bool:
        return self.max_class_drop_pt is None or self.drop_pt >= -self.max_class_drop_pt

    @property
    def passed(self) -> bool:
        return self.map_passed and self.class_passed


@dataclass
class EvalReport:
    engine: Path
    precision: str
    split: str
    num_images: int
    classes: list[str]
    ap: np.ndarray
    map: float
    all_labels: dict[str, float]
    top3: dict[str, float]
    parity: Parity | None = None
    tuned: dict[str, Any] = field(default_factory=dict)
    int8_plan: dict[str, Any] | None = None  # der-export's budgeted INT8 decision, when the engine carries one
    runtime: str = ""  # what ran, read back from the runner (e.g. "OpenVINO 2026.4 CPU bf16, 1 request")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "engine": str(self.engine), "precision": self.precision, "runtime": self.runtime, "split": self.split,
            "images": self.num_images, "mAP": self.map,
            "AP": {c: (None if np.isnan(v) else float(v)) for c, v in zip(self.classes, self.ap)},
            "all": self.all_labels, "top3": self.top3,
        }
        if self.parity is not None:
            out["parity"] = {**self.parity.__dict__, "passed": self.parity.passed}
        if self.int8_plan is not None:
            out["int8_plan"] = self.int8_plan
        if self.tuned:
            out["tuned"] = self.tuned
        return out


def engine_precision(engine: str | Path) -> str:
    """fp32 / fp16 / int8, as recorded by der-export (ONNX metadata, or the .plan sidecar)."""
    engine = Path(engine)
    if engine.suffix == ".onnx":
        from der_deploy.artifact.files import onnx_metadata

        recorded = onnx_metadata(engine).get(PRECISION_KEY)
        if recorded is None:
            raise EngineError(f"{engine}: no der-deploy precision record; export it with der-export")
        return recorded.split("-")[0]  # "int8-u8s8" -> "int8"
    from der_deploy.artifact.sidecar import read_sidecar

    return read_sidecar(engine).precision


def _preprocessed_batches(paths: list[Path], card: ModelCard, batch_size: int, workers: int | None) -> Iterator[np.ndarray]:
    """Ordered NCHW batches; a file that cannot be decoded stops the evaluation (metrics must be exact)."""
    from der_deploy.runtime.pipeline import preprocess_batches

    yield from preprocess_batches(paths, card, batch_size=batch_size, workers=workers)


def _check_same_model(card: ModelCard, ref_card: ModelCard, engine: Path, reference: Path) -> None:
    if card.classes != ref_card.classes:
        raise DerError(f"{reference}: its classes differ from {engine}'s; pass the checkpoint the engine was exported from")
    if tuple(card.input_size) != tuple(ref_card.input_size):
        raise DerError(f"{reference}: input size {ref_card.input_size} differs from {engine}'s {card.input_size}")


def ran_precision(file_precision: str, runner) -> str:
    """The precision whose budget applies: OpenVINO's read-back bf16/fp16 on a floating-point file, else the file's."""
    describe = getattr(runner, "describe", None)
    ran = describe().get("precision") if callable(describe) else None
    if file_precision != "int8" and ran in ("bf16", "fp16"):
        return ran
    return file_precision


def collect(engine: str | Path, data: str | Path, *, split: str = "test", data_format: str | None = None,
            reference: str | Path | None = None, batch_size: int = 8, workers: int | None = None,
            backend: str = "auto", precision: str | None = None,
            info: dict | None = None) -> tuple[ModelCard, np.ndarray, np.ndarray | None, np.ndarray]:
    """Engine probabilities, reference probabilities (or None) and targets over one split. ``precision`` is
    OpenVINO's inference precision; ``info`` (a dict) receives "runtime" and "runner" (what ran)."""
    from der_deploy.datasets import open_dataset
    from der_deploy.progress import track

    from der_deploy.runtime.predictor import Predictor

    dataset = open_dataset(data, split, format=data_format)
    ref_model = None
    with Predictor(engine, backend=backend, batch_size=batch_size, precision=precision) as predictor:
        card = predictor.card
        if info is not None:
            info["runtime"] = predictor.runner.summary()
            info["precision"] = ran_precision(engine_precision(engine), predictor.runner)
        if list(dataset.classes) != card.classes:
            raise DerError(
                f"{data}: dataset classes ({', '.join(dataset.classes[:5])}...) differ from the engine's "
                f"({', '.join(card.classes[:5])}...); evaluate on the data the model was trained for"
            )
        if reference is not None:
            ref_model, ref_card = _load_reference(reference)
            _check_same_model(card, ref_card, Path(engine), Path(reference))
        probs, ref_probs = [], []
        batches = _preprocessed_batches(list(dataset.paths), card, batch_size, workers)
        ref_batches = None
        if ref_model is not None and ref_card.decode != card.decode:
            # e.g. a draft-decoding engine vs its full-decoding checkpoint: each sees the images decoded its own
            # way, so the parity includes what shrink-on-load changes.
            ref_batches = _preprocessed_batches(list(dataset.paths), card.replace(decode=ref_card.decode), batch_size,
                                                workers)
        n_batches = -(-len(dataset) // batch_size)
        for x in track(batches, f"eval {Path(engine).name}", total=n_batches):
            probs.append(predictor.scores(x))
            if ref_model is not None:
                ref_probs.append(_reference_scores(ref_model, x if ref_batches is None else next(ref_batches)))
    targets = dataset.targets()
    return card, np.concatenate(probs), (np.concatenate(ref_probs) if ref_model is not None else None), targets


def _load_reference(reference: str | Path):
    try:
        from der_deploy.train.checkpoint import load_checkpoint
    except ImportError:
        raise DerError("--reference needs PyTorch: pip install der-deploy[train]") from None
    return load_checkpoint(reference)


def _reference_scores(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(x)).logits).numpy()


def parity(card: ModelCard, probs: np.ndarray, ref_probs: np.ndarray, targets: np.ndarray, budget_pt: float,
           max_class_drop_pt: float | None = None) -> Parity:
    ap = metrics.average_precision(probs, targets)
    ref_ap = metrics.average_precision(ref_probs, targets)
    delta = (ap - ref_ap) * 100.0
    valid = ~np.isnan(delta)
    worst = int(np.flatnonzero(valid)[np.argmax(np.abs(delta[valid]))]) if valid.any() else 0
    thr = np.asarray(card.thresholds)
    flips = float(np.mean((probs >= thr) != (ref_probs >= thr)))
    ref_map = metrics.mean_average_precision(ref_probs, targets)
    drop = int(np.flatnonzero(valid)[np.argmin(delta[valid])]) if valid.any() else 0
    return Parity(
        reference_map=ref_map,
        delta_map_pt=(metrics.mean_average_precision(probs, targets) - ref_map) * 100.0,
        worst_class=card.classes[worst],
        worst_delta_ap_pt=float(delta[worst]) if valid.any() else 0.0,
        flip_fraction=flips,
        max_abs_score_diff=float(np.max(np.abs(probs - ref_probs))),
        budget_pt=budget_pt,
        drop_class=card.classes[drop],
        drop_pt=min(float(delta[drop]), 0.0) if valid.any() else 0.0,
        max_class_drop_pt=max_class_drop_pt,
    )


def int8_plan(engine: str | Path) -> dict[str, Any] | None:
    """The budgeted-INT8 record of an .onnx engine (None for other engines or a plain export)."""
    engine = Path(engine)
    if engine.suffix != ".onnx":
        return None
    import json

    from der_deploy.artifact.files import onnx_metadata

    text = onnx_metadata(engine).get(INT8_PLAN_KEY)
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        raise EngineError(f"{engine}: its {INT8_PLAN_KEY} metadata is not JSON; re-export it with der-export") from None


def evaluate(engine: str | Path, data: str | Path, *, split: str = "test", data_format: str | None = None,
             reference: str | Path | None = None, batch_size: int = 8, workers: int | None = None,
             backend: str = "auto", budgets: dict[str, float] | None = None, tune_thresholds: bool = False,
             max_class_drop: float | None = None, precision: str | None = None) -> EvalReport:
    """``precision``: OpenVINO's inference precision (``backend="openvino"``); the parity budget follows what
    actually ran, read back from the compiled model (bf16 on an FP32 file -> the bf16 budget)."""
    engine = Path(engine)
    engine_precision(engine)  # a file without der-export's precision record fails before any decoding
    if max_class_drop is not None and reference is None:
        raise DerError("--max-class-drop compares each class's AP with the reference model's; add --reference model.pt")
    info: dict[str, Any] = {}
    card, probs, ref_probs, targets = collect(engine, data, split=split, data_format=data_format, reference=reference,
                                              batch_size=batch_size, workers=workers, backend=backend,
                                              precision=precision, info=info)
    precision = info["precision"]
    thr = np.asarray(card.thresholds)
    report = EvalReport(
        engine=engine, precision=precision, split=split, num_images=len(targets), classes=card.classes,
        ap=metrics.average_precision(probs, targets), map=metrics.mean_average_precision(probs, targets),
        all_labels=metrics.multilabel_scores(probs, targets, threshold=thr),
        top3=metrics.multilabel_scores(probs, targets, threshold=thr, top_k=3), runtime=info["runtime"],
    )
    if ref_probs is not None:
        budget = {**DEFAULT_BUDGETS, **(budgets or {})}[precision]
        report.parity = parity(card, probs, ref_probs, targets, budget, max_class_drop)
    report.int8_plan = int8_plan(engine)
    if tune_thresholds:
        from der_deploy.runtime.thresholds import write_tuned

        report.tuned = write_tuned(engine, card, probs, targets)
    return report
