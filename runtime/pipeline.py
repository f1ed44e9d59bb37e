"""Pipelined batched inference for large folders.

Decoding + preprocessing run in a worker pool, one task per batch, while the caller's thread runs the
engine on the previous batch (ONNX Runtime releases the GIL, and so do Pillow's decoders and resizers).
At most ``prefetch`` batches are submitted and not yet handed to the caller, so memory stays bounded by
``prefetch * batch_size`` decoded images however large the folder. Batches come back in input order;
a file that fails to decode becomes an error entry of its batch instead of stopping the run.
"""
from __future__ import annotations

import collections
import contextlib
import os
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import ImageError
from der_deploy.images import load_and_preprocess, preprocess, stack

Loader = Callable[[Any, ModelCard], np.ndarray]
EXECUTORS = ("thread", "process")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def prepare(item: Any, card: ModelCard, max_pixels: int | None = None) -> np.ndarray:
    """One input -> float32 (3, H, W): a path is decoded (the card's decode mode, ``max_pixels``), a PIL image
    preprocessed, an array checked."""
    if isinstance(item, (str, os.PathLike)):
        return load_and_preprocess(item, card, max_pixels=max_pixels)
    if isinstance(item, Image.Image):
        return preprocess(item, card)
    if isinstance(item, np.ndarray):
        check_chw(item.shape, card)
        return np.ascontiguousarray(item, dtype=np.float32)
    raise TypeError(f"cannot run inference on a {type(item).__name__}; give a path, a PIL image or a (3, H, W) array")


def check_chw(shape: tuple, card: ModelCard) -> None:
    h, w = card.input_size
    if tuple(shape) != (3, h, w):
        raise ValueError(
            f"preprocessed image has shape {tuple(shape)} but the model card expects (3, {h}, {w}); "
            "preprocess with der_deploy.images.preprocess(img, card)"
        )


def load_batch(loader: Loader, items: Sequence[Any], card: ModelCard):
    """Worker task: decode a batch; returns (stacked array or None, ok positions, {position: reason})."""
    arrays, ok, errors = [], [], {}
    for i, item in enumerate(items):
        try:
            arrays.append(loader(item, card))
            ok.append(i)
        except ImageError as err:
            errors[i] = err.reason  # a string: ImageError itself does not survive pickling (processes)
    return (stack(arrays) if arrays else None), ok, errors


@dataclass
class Batch:
    """One batch of results in input order: ``outputs`` rows belong to ``items[ok[j]]``."""

    start: int  # index of items[0] in the whole input
    items: list
    ok: list[int]
    outputs: dict[str, np.ndarray]
    errors: dict[int, str]  # position -> reason the file could not be decoded

    def error(self, pos: int) -> ImageError:
        return ImageError(self.items[pos], self.errors[pos])


@dataclass
class PipelineStats:
    """Timings of one run, for der-infer summaries and der-bench."""

    executor: str = "thread"
    workers: int = 0
    batch_size: int = 0
    images: int = 0  # decoded and inferred
    failed: int = 0
    batches: int = 0
    wall_s: float = 0.0  # first submit to last batch consumed (includes the caller's own work)
    engine_s: float = 0.0  # inside the engine call only
    wait_s: float = 0.0  # caller blocked waiting for decoding: > 0 means decode-bound
    peak_inflight: int = 0  # most batches submitted but not yet handed over
    extra: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def engine_images_per_s(self) -> float:
        return self.images / self.engine_s if self.engine_s > 0 else float("nan")


def _make_pool(executor: str, workers: int) -> Executor:
    if executor == "thread":
        return ThreadPoolExecutor(workers, thread_name_prefix="der-decode")
    import multiprocessing

    # spawn, not fork: the parent holds ONNX Runtime's thread pool, which fork would copy mid-state.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def run_pipeline(items: Sequence[Any], card: ModelCard, infer: Callable[[np.ndarray], dict[str, np.ndarray]], *,
                 batch_size: int = 8, workers: int | None = None, executor: str = "thread",
                 prefetch: int | None = None, loader: Loader = prepare, progress: bool = False,
                 description: str = "infer", stats: PipelineStats | None = None) -> Iterator[Batch]:
    """Yield :class:`Batch` results for ``items`` in order; fills ``stats`` as it goes.

    ``workers=0`` decodes in the calling thread (no overlap). ``prefetch`` (default ``2 * workers``, at
    least 2) bounds the batches submitted and not yet consumed, the one being inferred included.
    ``loader`` must be picklable for ``executor="process"``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    workers = default_workers() if workers is None else int(workers)
    prefetch = max(2, 2 * workers) if prefetch is None else max(1, int(prefetch))
    items = list(items)
    stats = stats if stats is not None else PipelineStats()
    stats.executor, stats.workers, stats.batch_size = (executor if workers else "inline"), workers, batch_size
    starts = list(range(0, len(items), batch_size))

    from der_deploy.progress import make_progress

    start_time = time.perf_counter()
    pool = _make_pool(executor, workers) if workers > 0 and len(starts) > 0 else None
    pending: collections.deque[tuple[int, Future | tuple]] = collections.deque()
    next_chunk = 0
    handed = 0  # batches the caller has finished with (the generator resumed after their yield)

    def submit() -> None:
        nonlocal next_chunk
        s = starts[next_chunk]
        chunk = items[s: s + batch_size]
        if pool is None:
            pending.append((s, load_batch(loader, chunk, card)))
        else:
            pending.append((s, pool.submit(load_batch, loader, chunk, card)))
        next_chunk += 1
        stats.peak_inflight = max(stats.peak_inflight, next_chunk - handed)

    # Only enter a live display when asked: rich allows one at a time, and callers may have their own bar.
    bar = make_progress() if progress else None
    try:
        with bar if bar is not None else contextlib.nullcontext():
            task = bar.add_task(description, total=len(items), status="") if bar is not None else None
            while next_chunk < len(starts) and (pool is not None and len(pending) < prefetch):
                submit()
            while next_chunk < len(starts) or pending:
                if not pending:
                    submit()
                s, job = pending.popleft()
                if isinstance(job, Future):
                    t0 = time.perf_counter()
                    array, ok, errors = job.result()
                    stats.wait_s += time.perf_counter() - t0
                else:
                    array, ok, errors = job
                outputs: dict[str, np.ndarray] = {}
                if array is not None:
                    t0 = time.perf_counter()
                    outputs = infer(array)
                    stats.engine_s += time.perf_counter() - t0
                chunk = items[s: s + batch_size]
                stats.images += len(ok)
                stats.failed += len(errors)
                stats.batches += 1
                yield Batch(s, chunk, ok, outputs, errors)
                handed += 1
                if pool is not None and next_chunk < len(starts):
                    submit()  # refill: the workers decode ahead while the engine and the caller work
                if task is not None:
                    bar.update(task, advance=len(chunk), status=f"{stats.failed} failed" if stats.failed else "")
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        stats.wall_s = time.perf_counter() - start_time


def preprocess_batches(items: Sequence[Any], card: ModelCard, *, batch_size: int = 8, workers: int | None = None,
                       executor: str = "thread", prefetch: int | None = None) -> Iterator[np.ndarray]:
    """Ordered, bounded, pool-decoded (N, 3, H, W) batches, for callers that run their own model (der-eval).

    Strict: the first file that cannot be decoded raises its :class:`ImageError` (exact metrics need all).
    """
    for batch in run_pipeline(items, card, lambda x: {"images": x}, batch_size=batch_size, workers=workers,
                              executor=executor, prefetch=prefetch):
        if batch.errors:
            raise batch.error(min(batch.errors))
        yield batch.outputs["images"]


def describe(stats: PipelineStats) -> str:
    """One line for logs: end-to-end vs engine-only throughput."""
    return (f"{stats.images} images in {stats.wall_s:.2f} s: {stats.images_per_s:.1f} img/s end-to-end, "
            f"{stats.engine_images_per_s:.1f} img/s engine-only ({stats.executor}, {stats.workers} workers, "
            f"batch {stats.batch_size}, waited {stats.wait_s:.2f} s on decoding)")


def as_path(item: Any) -> str | None:
    return str(item) if isinstance(item, (str, Path, os.PathLike)) else None
