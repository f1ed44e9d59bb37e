"""The Predictor: engine file + model card -> labels with scores, one result per image.

Decision rules (:meth:`Predictor.decide`):
- default: every class whose score reaches its own threshold from the card (``score >= thresholds[c]``);
- ``threshold=T``: the same with one threshold T for every class;
- ``top_k=K`` alone: the K highest scores, whatever their value (plain top-k, no threshold);
- ``threshold=T, top_k=K`` together (API only; der-infer makes them exclusive): the K most confident of
  the classes that reach T.
Labels are ordered by descending score (ties by class order); ``scores`` holds every class, in card order.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from der_deploy.artifact.card import ModelCard
from der_deploy.artifact.files import read_card
from der_deploy.backends import BaseRunner, open_runner
from der_deploy.errors import EngineError
from der_deploy.images import DEFAULT_MAX_PIXELS

from .pipeline import Batch, PipelineStats, as_path, check_chw, prepare, run_pipeline

INPUT_NAME = "images"
CADM = "cadm"


@dataclass
class Prediction:
    """Result for one input; ``error`` is set (and labels/scores empty) when the file could not be read."""

    path: str | None
    labels: list[str]
    scores: dict[str, float]
    error: str | None = None
    cadm: np.ndarray | None = field(default=None, repr=False, compare=False)  # (C, h, w) when requested

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of der-infer: {path, labels, scores} or {path, error}.

        ``path`` (and the path quoted in ``error``) is in :func:`der_deploy.pathtext.path_text` form, so a name
        that is not UTF-8 stays lossless and strict-JSON valid (``caf\\xe9.jpg``, never a lone surrogate)."""
        from der_deploy.pathtext import path_text

        path = path_text(self.path) if self.path is not None else None
        if self.error is not None:
            return {"path": path, "error": path_text(self.error)}
        return {"path": path, "labels": list(self.labels), "scores": dict(self.scores)}


def score_order(probs) -> list[int]:
    """Class indices by descending score, ties in class order: the order of every label list."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    return sorted(range(probs.size), key=lambda i: (-probs[i], i))


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)  # overflow-free logistic


class Predictor:
    """``Predictor("model.onnx")`` -- use as a context manager or call :meth:`close`.

    ``batch_size`` is the pipeline batch; batches beyond the engine's own maximum are split (and a fixed
    batch dimension is padded). ``workers``: decode threads (None: up to 4, 0: decode inline).
    ``backend``: "auto", "ort", "trt" or "openvino" (see :mod:`der_deploy.backends.registry`). OpenVINO only:
    ``precision`` ("fp32" default, "bf16", "fp16"; refused where the CPU cannot run it natively), ``ov_mode``
    ("latency" default, or "throughput": a batch split over concurrent infer requests), ``ov_cache_dir``
    (compiled-model cache; default ``$DER_OV_CACHE_DIR``). Giving them with another backend is an error.
    ``intra_op_threads``: CPU threads of ONNX Runtime or OpenVINO. ``max_pixels``: files whose decoded size is
    above it become error results, refused from their header (der_deploy.images; 0 or None: no limit).
    """

    def __init__(self, engine: str | Path, *, backend: str = "auto", providers=None, batch_size: int = 8,
                 workers: int | None = None, executor: str = "thread", intra_op_threads: int | None = None,
                 precision: str | None = None, ov_mode: str | None = None, ov_cache_dir: str | Path | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_pixels is not None and max_pixels < 0:
            raise ValueError(f"max_pixels must be >= 0 (0: no limit), got {max_pixels}")
        self.max_pixels = max_pixels
        self.engine = Path(engine)
        self.card: ModelCard = read_card(self.engine)
        self.batch_size = batch_size
        self.workers = workers
        self.executor = executor
        self.last_stats: PipelineStats | None = None
        runner = open_runner(self.engine, backend=backend, providers=providers, intra_op_threads=intra_op_threads,
                             precision=precision, mode=ov_mode, cache_dir=ov_cache_dir)
        runner.activate()
        self.runner: BaseRunner = runner
        try:
            self._check_io()
        except Exception:
            self.close()
            raise

    # --- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_io(self) -> None:
        inputs = self.runner.get_input_metadata()
        outputs = {m.name: m for m in self.runner.get_output_metadata()}
        if [m.name for m in inputs] != [INPUT_NAME]:
            raise EngineError(f"{self.engine}: expected one input named {INPUT_NAME!r}, found "
                              f"{[m.name for m in inputs]}; export the model with der-export")
        if "scores" not in outputs and "logits" not in outputs:
            raise EngineError(f"{self.engine}: no 'scores' or 'logits' output; export the model with der-export")
        h, w = self.card.input_size
        shape = inputs[0].shape
        fixed = tuple(d for d in shape[2:] if isinstance(d, int))
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3) or (len(fixed) == 2 and fixed != (h, w)):
            raise EngineError(f"{self.engine}: engine input shape {shape} does not match the card's (N, 3, {h}, {w}); "
                              "the card belongs to another export -- re-export the model")
        c = outputs.get("scores", outputs.get("logits")).shape
        if len(c) != 2 or (isinstance(c[1], int) and c[1] != self.card.num_classes):
            raise EngineError(f"{self.engine}: engine has {c} class outputs but the card lists "
                              f"{self.card.num_classes} classes; re-export the model")
        self.output_names = list(outputs)

    @property
    def backend_summary(self) -> str:
        """What runs the engine, for summary lines: "ONNX Runtime 1.23.2 CPU", "OpenVINO 2026.4 CPU bf16, 4 requests"."""
        summary = getattr(self.runner, "summary", None)
        if callable(summary):  # OpenVINO reads back what it compiled
            return summary()
        import sys

        providers = getattr(self.runner, "providers", None)
        if providers is not None:
            version = getattr(sys.modules.get("onnxruntime"), "__version__", "")
            names = [p.removesuffix("ExecutionProvider").replace("Tensorrt", "TensorRT") for p in providers]
            return f"ONNX Runtime {version} {'+'.join(names)}"
        trt = sys.modules.get("tensorrt")
        return f"TensorRT {getattr(trt, '__version__', '')} GPU" if trt is not None else type(self.runner).__name__

    @property
    def has_cadm(self) -> bool:
        return CADM in self.output_names

    def require_cadm(self) -> None:
        if not self.has_cadm:
            raise EngineError(f"{self.engine} has no 'cadm' output; re-export with der-export --cadm")

    # --- raw outputs ----------------------------------------------------------------------------
    def infer_batch(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Raw engine outputs for a preprocessed (N, 3, H, W) batch, split to the engine's max batch."""
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"expected an (N, 3, H, W) batch, got shape {x.shape}")
        check_chw(x.shape[1:], self.card)
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = x.shape[0]
        if n == 0:
            raise ValueError("cannot run inference on an empty batch")
        step = self.runner.max_batch or n
        lo = self.runner.min_batch
        parts: list[dict[str, np.ndarray]] = []
        for s in range(0, n, step):
            chunk = x[s: s + step]
            rows = chunk.shape[0]
            if rows < lo:  # a fixed batch dimension: pad with zeros, drop the padded rows below
                chunk = np.concatenate([chunk, np.zeros((lo - rows, *chunk.shape[1:]), np.float32)])
            out = self.runner.infer({INPUT_NAME: chunk})
            parts.append({k: v[:rows] for k, v in out.items()})
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(N, C) probabilities for a preprocessed batch."""
        return self._probs(self.infer_batch(x))

    @staticmethod
    def _probs(outputs: dict[str, np.ndarray]) -> np.ndarray:
        if "scores" in outputs:
            return np.asarray(outputs["scores"], dtype=np.float32)
        return sigmoid(outputs["logits"])

    def run(self, items: Sequence[Any], *, progress: bool = False, description: str = "infer") -> Iterator[Batch]:
        """Ordered stream of :class:`pipeline.Batch` (raw outputs + per-item errors) -- for der-eval/der-bench.

        ``self.last_stats`` holds the run's :class:`PipelineStats` (filled as the stream is consumed).
        """
        self.last_stats = PipelineStats()
        return run_pipeline(items, self.card, self.infer_batch, batch_size=self.batch_size, workers=self.workers,
                            executor=self.executor, progress=progress, description=description,
                            stats=self.last_stats, loader=functools.partial(prepare, max_pixels=self.max_pixels))

    def collect(self, items: Sequence[Any], names: Sequence[str] = ("logits", "scores"), *,
                progress: bool = False) -> dict[str, np.ndarray]:
        """Stack the named outputs for all ``items`` in order; raises the first :class:`ImageError`."""
        missing = [n for n in names if n not in self.output_names]
        if missing:
            raise EngineError(f"{self.engine} has no {missing[0]!r} output (it has {', '.join(self.output_names)})")
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for batch in self.run(items, progress=progress):
            if batch.errors:
                raise batch.error(min(batch.errors))
            for n in names:
                parts[n].append(batch.outputs[n])
        return {n: np.concatenate(v) if v else np.empty((0, self.card.num_classes), np.float32)
                for n, v in parts.items()}

    # --- decisions ------------------------------------------------------------------------------
    def decide(self, probs: np.ndarray, *, threshold: float | None = None, top_k: int | None = None) -> list[str]:
        """Labels for one row of probabilities (see the module doc for the rules)."""
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        c = self.card.num_classes
        order = score_order(probs)
        if top_k is not None and threshold is None:
            keep = order
        else:
            th = self.card.thresholds if threshold is None else [threshold] * c
            keep = [i for i in order if probs[i] >= th[i]]
        if top_k is not None:
            keep = keep[:top_k]
        return [self.card.classes[i] for i in keep]

    def _check_rule(self, threshold: float | None, top_k: int | None) -> None:
        if threshold is not None and not (0.0 <= threshold <= 1.0 and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a probability in [0, 1], got {threshold}")
        if top_k is not None and not (1 <= int(top_k) <= self.card.num_classes):
            raise ValueError(f"top_k must be between 1 and the model's {self.card.num_classes} classes, got {top_k}")

    def _predictions(self, batches: Iterable[Batch], threshold, top_k, with_cadm: bool) -> Iterator[Prediction]:
        classes = self.card.classes
        for batch in batches:
            probs = self._probs(batch.outputs) if batch.ok else None
            row = {pos: j for j, pos in enumerate(batch.ok)}
            for pos, item in enumerate(batch.items):
                path = as_path(item)
                if pos in batch.errors:
                    yield Prediction(path, [], {}, error=str(batch.error(pos)))
                    continue
                p = probs[row[pos]]
                cadm = batch.outputs[CADM][row[pos]] if with_cadm else None
                yield Prediction(path, self.decide(p, threshold=threshold, top_k=top_k),
                                 {name: float(v) for name, v in zip(classes, p)}, cadm=cadm)

    # --- predictions ----------------------------------------------------------------------------
    def predict_iter(self, items: Iterable[Any], *, threshold: float | None = None, top_k: int | None = None,
                     with_cadm: bool = False, progress: bool = False) -> Iterator[Prediction]:
        """Stream one :class:`Prediction` per item, in input order, decoding in the worker pool.

        Unreadable files give a Prediction with ``error`` instead of stopping the stream.
        """
        self._check_rule(threshold, top_k)
        if with_cadm:
            self.require_cadm()
        return self._predictions(self.run(list(items), progress=progress), threshold, top_k, with_cadm)

    def predict(self, inputs: Any, *, threshold: float | None = None, top_k: int | None = None,
                with_cadm: bool = False) -> list[Prediction]:
        """Predictions for a path, a PIL image, a (3, H, W) / (N, 3, H, W) array, or a list of these."""
        if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
            inputs = list(inputs)
        elif isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray)):
            inputs = [inputs]
        return list(self.predict_iter(inputs, threshold=threshold, top_k=top_k, with_cadm=with_cadm))


def measure(engine: str | Path, images: Sequence[Any], *, batch_size: int = 8, backend: str = "ort",
            **options: Any) -> dict[str, Any]:
    """der-infer's own numbers for ``engine`` on ``images``: a warm-up, then one ordered pass through the
    Predictor (pooled decode overlapped with batched inference). Used by der-bench and der-serve load."""
    images = list(images)
    with Predictor(engine, backend=backend, batch_size=batch_size, **options) as predictor:
        predictor.predict(images[: 2 * batch_size])  # warm-up: sessions, pools and caches
        results = list(predictor.predict_iter(images))
        stats = predictor.last_stats
    return {"images": len(results), "batch": batch_size, "end_to_end_img_s": stats.images_per_s,
            "engine_only_img_s": stats.engine_images_per_s, "decode_wait_s": stats.wait_s}
