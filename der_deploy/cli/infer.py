"""der-infer: labels with scores for images and folders, from an ONNX file or a TensorRT engine."""
from __future__ import annotations

import contextlib
import csv
import json
import sys
from pathlib import Path
from typing import IO, Iterator

import click

from ._common import handle_errors

FORMATS = ("table", "json", "jsonl", "csv")
SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def output_format(fmt: str | None, output: Path | None) -> str:
    """--format if given; else from -o's suffix (a table only when asked for), else a table on stdout."""
    if fmt is not None:
        return fmt
    if output is None:
        return "table"
    found = SUFFIX_FORMATS.get(output.suffix.lower())
    if found is None:
        raise click.UsageError(f"cannot tell the format from {output.name}: name it .json, .jsonl or .csv, or pass "
                               f"--format ({', '.join(FORMATS)})")
    return found


class _Writer:
    """Streams predictions in one format; the table is rendered at the end (it needs every row)."""

    def __init__(self, fmt: str, out: IO[str], classes: list[str]):
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


@contextlib.contextmanager
def _open_output(output: Path | None) -> Iterator[IO[str]]:
    if output is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    from der_deploy.fileio import atomic_path

    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        yield f


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--engine", type=click.Path(path_type=Path),
              help="Model file: .onnx (ONNX Runtime) or .plan/.engine (TensorRT) from der-export.")
@click.option("--triton", metavar="URL",
              help="Instead of --engine: a Triton server (der-serve) at HOST:PORT (HTTP) or grpc://HOST:PORT[/MODEL]; "
                   "--batch-size requests in flight, batched by the server.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, None), help="Images per engine call.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0),
              help="One threshold for every class (default: the card's per-class thresholds).")
@click.option("--top-k", type=click.IntRange(1, None), help="The K highest-scoring labels, whatever their score.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Default: from -o's suffix (.json, .jsonl, .csv), else table. jsonl/json: {path, labels, scores} or "
                   "{path, error}; csv: path, labels, one score column per class, error. Paths that are not UTF-8 are "
                   "written losslessly: invalid bytes as \\xNN, backslashes doubled (see README).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (atomically) instead of stdout.")
@click.option("--cam", "cam_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write CADM heat-map overlays DIR/<stem>_<label>.png (needs an engine exported with --cadm).")
@click.option("--strict", is_flag=True, help="Exit 1 if any image could not be read.")
@click.option("--backend", type=click.Choice(["auto", "ort", "trt"]), default="auto", show_default=True)
@click.option("--providers", help="ONNX Runtime providers in priority order, e.g. cpu or cuda,cpu (default cpu).")
@click.option("--workers", type=click.IntRange(0, None), help="Decode threads (default: up to 4; 0 decodes inline).")
@handle_errors
def main(engine, triton, paths, batch_size, threshold, top_k, fmt, output, cam_dir, strict, backend, providers, workers):
    """Classify images (files or folders, walked recursively) with a DER engine.

    Unreadable images are reported on stderr and skipped; the exit code is 0 unless --strict.
    """
    if threshold is not None and top_k is not None:
        raise click.UsageError("--threshold and --top-k are mutually exclusive; give one of them")
    if (engine is None) == (triton is None):
        raise click.UsageError("give --engine MODEL (local) or --triton HOST:PORT (a server), exactly one of them")
    if triton is not None and (backend != "auto" or providers or workers is not None):
        raise click.UsageError("--backend, --providers and --workers apply to a local --engine, not to --triton")
    from der_deploy.errors import DerError, ImageError
    from der_deploy.fileio import check_writable
    from der_deploy.images import IMAGE_EXTENSIONS, load_image, scan_images
    from der_deploy.pathtext import path_text
    from der_deploy.runtime.pipeline import describe
    from der_deploy.runtime.predictor import Predictor

    fmt = output_format(fmt, output)
    if output is not None:
        check_writable(output)
    if triton is not None:
        from der_deploy.runtime.triton_client import TritonPredictor

        predictor = TritonPredictor(triton, concurrency=batch_size)
    else:
        predictor = Predictor(engine, backend=backend, providers=providers, batch_size=batch_size, workers=workers)
    with predictor as pred:
        card = pred.card
        if top_k is not None and top_k > card.num_classes:
            raise click.BadParameter(f"{top_k} exceeds the model's {card.num_classes} classes", param_hint="--top-k")
        writer_cam = None
        if cam_dir is not None:
            pred.require_cadm()
            from der_deploy.runtime.cam import CamWriter

            writer_cam = CamWriter(cam_dir, card.classes)
        scan = scan_images(paths)
        images = scan.files
        if not images:
            skipped = f"; {scan.describe_skipped()}" if scan.skipped_total else ""
            raise DerError(f"no image files found in {', '.join(map(path_text, paths))} (folders are searched recursively "
                           f"for {', '.join(sorted(IMAGE_EXTENSIONS))}){skipped}")
        failed = 0
        with _open_output(output) as out:
            writer = _Writer(fmt, out, card.classes)
            for p in pred.predict_iter(images, threshold=threshold, top_k=top_k, with_cadm=writer_cam is not None,
                                       progress=True):
                if p.error is None and writer_cam is not None and p.labels:
                    try:
                        writer_cam.write(load_image(p.path), p.cadm, p.labels, p.path)
                    except ImageError as err:  # changed on disk since it was decoded
                        p.labels, p.scores, p.error = [], {}, str(err)
                if p.error is not None:
                    failed += 1
                    click.echo(f"skipped {path_text(p.error)}", err=True)  # click, not rich: never wrapped
                writer.add(p)
            writer.finish()
        stats = pred.last_stats
    if failed:
        click.echo(f"{failed} of {len(images)} images could not be read and were skipped"
                   + (" (--strict: exit 1)" if strict else ""), err=True)
    if stats is not None:  # the summary line also counts what the folder walk skipped (dangling links, FIFOs...)
        click.echo(describe(stats) + (f"; {scan.describe_skipped()}" if scan.skipped_total else ""), err=True)
    if failed and strict:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
