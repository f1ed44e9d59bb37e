"""Bulk scoring on a Ray cluster with Ray Data: der-infer's records for a large image collection.

The driver lists the files (as der-infer does, plus a manifest), puts the engine's bytes into Ray's object store
once and runs ``from_arrow(blocks).map_batches(_Replica, ActorPoolStrategy(N))``: each replica (a Ray actor)
writes the engine to its node's temp folder, opens ONE :class:`Predictor` (a TensorRT plan is checked against
that node's GPU by the runner, as locally) and decodes + infers its batches; unreadable files become error
records. Records stream back to the driver (runtime/ray_output.py) through
:class:`runtime.records.RecordWriter` (local der-infer's bytes, in completion order); Parquet is written by
Ray into ``OUT.tmp-<id>/``, checked, marked ``_SUCCESS`` and renamed. Every row carries its input position,
so a block Ray re-runs after a node died can neither duplicate nor drop a record. Ray is imported inside
functions only (extra ``der-deploy[ray]``).
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from der_deploy.errors import BackendUnavailable, DerError

from .ray_output import RaySummary, write_parquet, write_records
from .records import list_inputs

RAY_HINT = "Ray is not installed; pip install 'der-deploy[ray]'"
MAX_BLOCKS = 4000  # input blocks the driver puts into the object store; more rows per block beyond that


def import_ray():
    """``ray`` and ``ray.data``, or :class:`BackendUnavailable` with the pip hint (one line)."""
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] extra: pyarrow, pandas)
    except ImportError:
        raise BackendUnavailable(RAY_HINT) from None
    return ray


def check_address(address: str | None) -> str | None:
    """None / "local" (start a local Ray), "auto", "ray://HOST:PORT" or "HOST:PORT"; DerError otherwise."""
    if address in (None, "", "local"):
        return None
    if address == "auto" or address.startswith("ray://") or (":" in address and "/" not in address):
        return address
    raise DerError(f"--ray {address!r} is not a Ray address: give auto, ray://HOST:PORT or HOST:PORT (omit it for a "
                   "local Ray); with paths after it write --ray=ADDRESS")


def replica_count(cpus: float, gpus: float, cpus_per: float, gpus_per: float, reserve: float = 1) -> int:
    """Replicas that fit the cluster, ``reserve`` CPUs kept free for Ray Data's own tasks: Parquet output needs
    one for its write tasks (issue 18: on 2 CPUs, a pool holding every CPU starved the read tasks and hung).
    Records output has no such task (the input blocks come from the driver, the driver writes)."""
    if gpus_per <= 0 and cpus_per <= 0:
        raise DerError("a replica needs CPUs or GPUs; give --replica-cpus > 0 or --replica-gpus > 0")
    for have, per, what in ((gpus, gpus_per, "GPUs"), (cpus, cpus_per, "CPUs")):
        if per > 0 and have < per:
            raise DerError(f"the Ray cluster has {have:g} {what} and a replica asks for {per:g}; lower "
                           f"--replica-{what[:3].lower()}s or add nodes")
    fit = [int(max(cpus - reserve, cpus_per) // cpus_per) if cpus_per > 0 else 1 << 30]
    if gpus_per > 0:
        fit.append(int(gpus // gpus_per))
    return max(1, min(fit))


# --- the replica (one Ray actor) -------------------------------------------------------------------
class _Replica:
    """One model load per actor; called with pyarrow tables of (index, path) rows, returns their records."""

    def __init__(self, engine_name: str, engine_files, options: dict, classes: list[str], rule: dict,
                 cwd: str | None):
        from der_deploy.runtime.predictor import Predictor

        if cwd is not None:  # relative paths are the driver's; this process is the actor's alone
            try:
                os.chdir(cwd)
            except OSError:
                raise DerError(f"relative paths need the driver's folder {cwd} on every Ray node; give absolute "
                               "paths or mount the images at the same place") from None
        self.tmp = None
        if type(engine_files).__name__ == "ObjectRef":  # constructor args are not resolved by Ray Data
            import ray

            engine_files = ray.get(engine_files)
        if isinstance(engine_files, dict):  # bytes from the object store: engine (+ a plan's sidecar)
            self.tmp = tempfile.mkdtemp(prefix="der-ray-engine-")
            for name, data in engine_files.items():
                Path(self.tmp, name).write_bytes(data)
            engine = Path(self.tmp, engine_name)
        else:  # a path every node can read
            engine = Path(engine_files)
        self.classes, self.rule = classes, rule
        self.predictor = Predictor(engine, **options)

    def __call__(self, batch):
        import pyarrow as pa

        from der_deploy.pathtext import path_from_text, path_text

        texts = batch.column("path").to_pylist()
        preds = self.predictor.predict_iter([path_from_text(t) for t in texts], **self.rule)
        labels, scores, errors = [], [], []
        for p in preds:
            labels.append(list(p.labels))
            scores.append(None if p.error is not None else p.scores)
            errors.append(None if p.error is None else path_text(p.error))
        struct = pa.struct([(c, pa.float64()) for c in self.classes])
        return pa.table({"index": batch.column("index"), "path": pa.array(texts, pa.string()),
                         "labels": pa.array(labels, pa.list_(pa.string())), "scores": pa.array(scores, struct),
                         "error": pa.array(errors, pa.string())})

    def __del__(self):
        if getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)


# --- the job -----------------------------------------------------------------------------------------
def _ship_engine(ray, engine: Path, mode: str):
    if mode == "shared":
        return str(engine.resolve())
    if mode != "object_store":
        raise ValueError(f"engine_transfer must be 'object_store' or 'shared', got {mode!r}")
    from der_deploy.artifact.sidecar import sidecar_path

    files = {engine.name: engine.read_bytes()}
    side = sidecar_path(engine)
    if side.is_file():
        files[side.name] = side.read_bytes()
    return ray.put(files)


def _blocks(files: list[Path], rows: int) -> list:
    import pyarrow as pa

    from der_deploy.pathtext import path_text

    per_block = max(rows, math.ceil(len(files) / MAX_BLOCKS / rows) * rows)
    return [pa.table({"index": pa.array(range(s, min(s + per_block, len(files))), pa.int64()),
                      "path": pa.array([path_text(f) for f in files[s: s + per_block]], pa.string())})
            for s in range(0, len(files), per_block)]


def _user_error(err: BaseException) -> DerError:
    """One line for what failed on Ray: our own error if Ray wraps one (as an exception, or as the traceback text
    of an actor's constructor: a plan for another GPU, a missing backend), else Ray's first line."""
    cause = err
    for _ in range(20):  # Ray's wrappers nest a few deep; never loop on a cycle
        if cause is None or isinstance(cause, DerError):
            break
        cause = getattr(cause, "cause", None) or cause.__cause__
    if isinstance(cause, DerError):
        return cause
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    remote = re.findall(r"^der_deploy\.errors\.\w+: (.*)$", text, re.M)
    if remote:
        return DerError(f"on a Ray worker: {remote[-1]}")
    return DerError(f"the Ray job failed: {type(err).__name__}: {(text.strip().splitlines() or [''])[0]}")


def infer_ray(engine: str | Path, paths: Iterable[str | Path] = (), *, manifest: str | Path | None = None,
              address: str | None = None, replicas: int | None = None, batch_size: int = 8,
              num_cpus_per_replica: float = 1, num_gpus_per_replica: float = 0, backend: str = "auto",
              providers=None, workers: int | None = None, threads: int | None = None, options: dict | None = None,
              output: str | Path | None = None, fmt: str = "jsonl", threshold: float | None = None,
              top_k: int | None = None, engine_transfer: str = "object_store",
              progress: bool | Callable[[int, int], None] = False,
              on_error: Callable[[Any], None] | None = None, stdout=None) -> RaySummary:
    """Score ``paths`` (+ ``manifest``) with ``engine`` on Ray; records like der-infer's (see the module doc).

    ``address``: None starts a local Ray, "auto" / "ray://HOST:PORT" / "HOST:PORT" joins a cluster (a Ray
    already initialised by the caller is used as is). ``replicas``: actors (default: what the cluster's
    resources fit, see :func:`replica_count`). ``threads``: engine threads per replica and ``workers`` decode
    threads (both default to ``ceil(num_cpus_per_replica)``); ``options``: more :class:`Predictor` keywords
    (precision, ov_mode, max_pixels...). ``fmt``: jsonl / json / csv / table (written by
    the driver to ``output`` atomically, or ``stdout``) or parquet (a folder, see README). ``progress``: a
    bar, or a callable ``(done, total)``. ``on_error(prediction)`` sees each unreadable file (not parquet).
    """
    from der_deploy.artifact.files import read_card

    formats = ("jsonl", "json", "csv", "table", "parquet")
    if fmt not in formats:
        raise DerError(f"unknown format {fmt!r} for Ray output; use one of {', '.join(formats)}")
    if fmt == "parquet" and output is None:
        raise DerError("Parquet output needs -o OUT.parquet (a folder of part files)")
    address = check_address(address)
    engine = Path(engine)
    card = read_card(engine)
    if top_k is not None and not 1 <= top_k <= card.num_classes:
        raise DerError(f"--top-k {top_k} exceeds the model's {card.num_classes} classes")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise DerError(f"--threshold {threshold} is not a probability in [0, 1]")
    files, scan = list_inputs(paths, manifest)
    if not files:
        raise DerError("no image files to score" + (f" ({scan.describe_skipped()})" if scan.skipped_total else ""))
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False,
                 **({"include_dashboard": False} if address is None else {}))
    try:
        options = dict(options or {}, backend=backend, providers=providers, batch_size=batch_size)
        return _run(ray, engine, files, card, replicas=replicas, batch_size=batch_size, cpus=num_cpus_per_replica,
                    gpus=num_gpus_per_replica, options=options, workers=workers, threads=threads, output=output,
                    fmt=fmt, rule=dict(threshold=threshold, top_k=top_k), engine_transfer=engine_transfer,
                    progress=progress, on_error=on_error, stdout=stdout)
    finally:
        if started:
            ray.shutdown()


def _run(ray, engine, files, card, *, replicas, batch_size, cpus, gpus, options, workers, threads, output, fmt, rule,
         engine_transfer, progress, on_error, stdout) -> RaySummary:
    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    rows = batch_size * 4  # rows per replica call: 4 engine batches, so decode overlaps the engine
    blocks = _blocks(files, rows)
    if replicas is None:
        replicas = min(replica_count(resources.get("CPU", 0), resources.get("GPU", 0), cpus, gpus,
                                     reserve=1 if fmt == "parquet" else 0), len(blocks))
    elif replicas < 1:
        raise DerError(f"--replicas must be >= 1, got {replicas}")
    elif replicas * cpus > resources.get("CPU", 0) or replicas * gpus > resources.get("GPU", 0):
        print(f"warning: {replicas} replicas x {cpus:g} CPU + {gpus:g} GPU exceed the cluster's "
              f"{resources.get('CPU', 0):g} CPUs + {resources.get('GPU', 0):g} GPUs now; the job waits for more nodes",
              file=sys.stderr)
    # One engine thread per replica CPU: more replicas, not more threads. Measured on 2 busy cores, 2 ORT threads
    # in one replica cost 19.9 ms CPU per image against 10.7 ms with 1 (ORT's threads spin while they wait).
    threads = threads or max(1, math.ceil(cpus))
    options = dict(options, workers=threads if workers is None else workers)
    if engine.suffix.lower() not in (".plan", ".engine"):
        options["intra_op_threads"] = threads  # else every replica would start one thread per core of its node
    cwd = os.getcwd() if any(not os.path.isabs(f) for f in files) else None
    shipped = _ship_engine(ray, engine, engine_transfer)
    ds = ray.data.from_arrow(blocks).map_batches(
        _Replica, batch_size=rows, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=replicas),
        num_cpus=cpus, num_gpus=gpus or None, zero_copy_batch=True,
        fn_constructor_args=(engine.name, shipped, options, card.classes, rule, cwd))
    t0 = time.perf_counter()
    summary = RaySummary(len(files), 0, 0.0, replicas, nodes, cpus, gpus)
    try:
        with _quiet_ray_data():
            if fmt == "parquet":
                write_parquet(ds, Path(output), summary, card.classes)
            else:
                write_records(ds, output, fmt, card.classes, summary, progress, on_error, stdout, t0)
    except DerError:
        raise
    except Exception as err:  # Ray wraps what failed on a worker
        raise _user_error(err) from None
    summary.wall_s = time.perf_counter() - t0
    return summary


@contextlib.contextmanager
def _quiet_ray_data():
    """Ray Data settings for one job, put back afterwards (they are process-wide): no bars or INFO lines
    interleaved with our progress (its full log stays in the session's logs/ray-data), the UDF's own
    exception, and no silently dropped block (one that fails after its retries fails the job)."""
    import logging

    from ray.data import DataContext

    ctx, logger = DataContext.get_current(), logging.getLogger("ray.data")
    wanted = dict(enable_progress_bars=False, print_on_execution_start=False, raise_original_map_exception=True,
                  max_errored_blocks=0)
    saved, level = {k: getattr(ctx, k) for k in wanted}, logger.level
    for k, v in wanted.items():
        setattr(ctx, k, v)
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
        logger.setLevel(level)
