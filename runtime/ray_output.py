"""The driver's side of a Ray Data scoring job: its summary, and its records written as local der-infer writes
them (streamed, in completion order, atomically) or as a Parquet folder published whole.

Every row carries its input position: a block Ray re-runs after a node died is dropped here (records) or caught
before publishing (Parquet), so a record is never written twice nor missing.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from der_deploy.errors import DerError, OutputError

PARQUET_COLUMNS = ("index", "path", "labels", "scores", "error")


@dataclass
class RaySummary:
    """What one :func:`infer_ray` run did."""

    images: int
    errors: int
    wall_s: float
    replicas: int
    nodes: int
    cpus_per_replica: float
    gpus_per_replica: float
    duplicates_dropped: int = 0
    first_s: float = float("nan")  # job start to the first records: actors started, engine loaded, first batches

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else float("nan")

    def line(self) -> str:
        res = f"{self.cpus_per_replica:g} CPU" + (f" + {self.gpus_per_replica:g} GPU" if self.gpus_per_replica else "")
        dup = f", {self.duplicates_dropped} re-run records dropped" if self.duplicates_dropped else ""
        first = f" (first records after {self.first_s:.1f} s)" if self.first_s == self.first_s else ""
        return (f"{self.images} images in {self.wall_s:.2f} s{first}: {self.images_per_s:.1f} img/s on Ray, "
                f"{self.replicas} replicas ({res} each) on {self.nodes} nodes; {self.errors} could not be read{dup}")


def prediction_from_row(row: dict):
    """A :class:`Prediction` back from one output row (paths and errors leave the replica in path_text form)."""
    from der_deploy.pathtext import path_bytes
    from der_deploy.runtime.predictor import Prediction

    path = os.fsdecode(path_bytes(row["path"]))
    if row["error"] is not None:
        return Prediction(path, [], {}, error=os.fsdecode(path_bytes(row["error"])))
    return Prediction(path, list(row["labels"]), dict(row["scores"]))


def write_records(ds, output, fmt, classes, summary: RaySummary, progress, on_error, stdout, t0: float) -> None:
    from der_deploy.fileio import atomic_path

    from .records import RecordWriter

    n = summary.images
    seen = bytearray(n)  # one flag per input: a re-run block must not write its records twice
    done = 0
    bar = task = None
    if progress is True:
        from der_deploy.progress import make_progress

        bar = make_progress()
    with contextlib.ExitStack() as stack:
        if output is None:
            out = stdout or sys.stdout
        else:
            tmp = stack.enter_context(atomic_path(output))
            out = stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))
        if bar is not None:
            stack.enter_context(bar)
            task = bar.add_task("infer (ray)", total=n, status="")
        writer = RecordWriter(fmt, out, classes)
        batches = ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2)
        # Closed on the way out, Ctrl-C included: that stops the execution and its actors now, not at exit.
        stack.callback(getattr(batches, "close", lambda: None))
        for table in batches:
            if done == 0:
                summary.first_s = time.perf_counter() - t0
            for row in table.to_pylist():
                i = row["index"]
                if seen[i]:
                    summary.duplicates_dropped += 1
                    continue
                seen[i] = 1
                pred = prediction_from_row(row)
                if pred.error is not None:
                    summary.errors += 1
                    if on_error is not None:
                        on_error(pred)
                writer.add(pred)
                done += 1
            if bar is not None:
                bar.update(task, completed=done, status=f"{summary.errors} failed" if summary.errors else "")
            elif callable(progress):
                progress(done, n)
        if done != n:  # before the rename: an incomplete file must never look finished
            raise DerError(f"the Ray job returned {done} of {n} records; nothing was written, run it again")
        writer.finish()
        if output is None:
            out.flush()


def write_parquet(ds, output: Path, summary: RaySummary, classes: list[str]) -> None:
    """Ray writes part files into OUT.tmp-<id>/; checked (every index once), marked _SUCCESS, renamed to OUT."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    output = output.absolute()
    if output.exists() and not (output.is_dir() and (output / "_SUCCESS").is_file()):
        raise OutputError(f"{output}: exists and is not a der-infer Parquet folder (no _SUCCESS); choose another -o")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{output}: cannot create folder {output.parent} ({err.strerror})") from None
    tmp = output.with_name(f"{output.name}.tmp-{uuid.uuid4().hex[:12]}")
    old = None
    try:
        # Written by Ray's tasks wherever they run: on several nodes OUT must be shared storage (README).
        ds.write_parquet(str(tmp))
        table = pq.read_table(tmp, columns=["index", "error"])
        index = table.column("index")
        unique = len(pc.unique(index)) if len(index) else 0
        if len(index) != summary.images or unique != summary.images:
            raise DerError(f"the Ray job wrote {len(index)} rows for {summary.images} images ({unique} distinct); "
                           "nothing was published, run it again")
        summary.errors = len(index) - table.column("error").null_count
        meta = {"images": summary.images, "errors": summary.errors, "columns": list(PARQUET_COLUMNS),
                "classes": list(classes), "files": sorted(p.name for p in tmp.glob("*.parquet"))}
        (tmp / "_SUCCESS").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if output.exists():  # a previous run's folder (it has _SUCCESS): swap it out, then delete it
            old = output.with_name(f"{output.name}.old-{uuid.uuid4().hex[:12]}")
            os.rename(output, old)
        os.rename(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
