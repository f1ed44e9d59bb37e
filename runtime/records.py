"""What der-infer reads and writes, the same for every caller (local der-infer, ``--ray``, the API).

Inputs: :func:`list_inputs` (folders walked by :func:`der_deploy.images.scan_images`, plus a manifest).
Outputs: one :class:`RecordWriter` per output: jsonl / json / csv stream one record per :class:`Prediction`;
the table is rendered at the end (it needs every row). Paths and errors are in
:func:`der_deploy.pathtext.path_text` form.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO, Iterable

from der_deploy.errors import BackendUnavailable, DerError

FORMATS = ("table", "json", "jsonl", "csv")
SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def read_manifest(path: str | Path) -> list[str]:
    """Paths listed in ``path``: Parquet (column ``path``, string or binary) or text, one path per line.

    Text lines are raw bytes (as ``find`` prints them; non-UTF-8 names survive), empty lines are ignored.
    Entries are not checked here: a missing file becomes an error record on a worker."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            if "path" not in schema.names:
                raise DerError(f"{path}: no column 'path' (found {', '.join(schema.names)}); name the column of file "
                               "paths 'path'")
            values = pq.read_table(path, columns=["path"]).column("path").to_pylist()
            return [os.fsdecode(v) for v in values if v]
        data = path.read_bytes()
    except ImportError:
        raise BackendUnavailable(f"{path}: reading a Parquet manifest needs pyarrow; pip install pyarrow") from None
    except OSError as err:
        raise DerError(f"{path}: cannot read the manifest ({err.strerror or err}); check the path") from None
    return [os.fsdecode(line) for line in data.split(b"\n") if line]


def list_inputs(paths: Iterable[str | Path] = (), manifest: str | Path | None = None):
    """(image paths, the folder scan) for ``paths`` (der-infer's rules) plus ``manifest``'s entries.

    Duplicates are dropped, first occurrence kept, as der-infer drops them."""
    from der_deploy.images import scan_images

    scan = scan_images(list(paths))
    files = list(scan.files)
    if manifest is not None:
        files += [Path(p) for p in read_manifest(manifest)]
    return list(dict.fromkeys(files)), scan


class RecordWriter:
    """Streams predictions in one format to ``out``; call :meth:`finish` once at the end."""

    def __init__(self, fmt: str, out: IO[str], classes: list[str]):
        if fmt not in FORMATS:
            raise ValueError(f"unknown record format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.fmt, self.out, self.classes = fmt, out, classes
        self.count = 0
        self.rows: list[tuple[str, str]] = []
        if fmt == "csv":
            self.csv = csv.writer(out, lineterminator="\n")
            self.csv.writerow(["path", "labels", *classes, "error"])
        elif fmt == "json":
            out.write("[")

    def add(self, pred) -> None:
        from der_deploy.pathtext import path_text

        rec = pred.to_dict()  # paths and errors already in path_text form
        path = path_text(pred.path) if pred.path is not None else ""
        if self.fmt == "jsonl":
            self.out.write(json.dumps(rec) + "\n")
        elif self.fmt == "json":
            self.out.write(("," if self.count else "") + "\n  " + json.dumps(rec))
        elif self.fmt == "csv":
            if pred.error is not None:
                self.csv.writerow([path, "", *[""] * len(self.classes), rec["error"]])
            else:
                self.csv.writerow([path, ";".join(pred.labels),
                                   *[f"{pred.scores[c]:.6f}" for c in self.classes], ""])
        else:
            text = ("error: " + rec["error"]) if pred.error is not None else (
                ", ".join(f"{lab} {pred.scores[lab]:.3f}" for lab in pred.labels) or "(none)")
            self.rows.append((path, text))
        self.count += 1

    def finish(self) -> None:
        if self.fmt == "json":
            self.out.write("\n]\n" if self.count else "]\n")
        elif self.fmt == "table":
            from rich.console import Console

            from der_deploy.progress import table

            # Not a terminal: never wrap paths (a file or pipe has no width).
            console = Console(file=self.out, highlight=False, width=None if self.out.isatty() else 100_000)
            console.print(table(None, ["image", "labels (score)"], self.rows))
