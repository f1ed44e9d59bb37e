"""der-infer: labels with scores for images and folders, from an ONNX file (ONNX Runtime or OpenVINO) or a TensorRT
engine."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import IO, Iterator

import click

# The records are written by the runtime, so der-infer --ray and the API write the same bytes.
from der_deploy.runtime.records import FORMATS, SUFFIX_FORMATS
from der_deploy.runtime.records import RecordWriter as _Writer

from ._common import handle_errors


def output_format(fmt: str | None, output: Path | None) -> str:
    """--format if given; else from -o's suffix (a table only when asked for), else a table on stdout."""
    if fmt is not None:
        return fmt
    if output is None:
        return "table"
    if output.suffix.lower() == ".parquet":  # a folder of part files, written by Ray (--ray)
        return "parquet"
    found = SUFFIX_FORMATS.get(output.suffix.lower())
    if found is None:
        raise click.UsageError(f"cannot tell the format from {output.name}: name it .json, .jsonl or .csv, or pass "
                               f"--format ({', '.join(FORMATS)})")
    return found


def _with_backend(line: str, ran_on: str | None) -> str:
    """"... img/s engine-only (...)" -> "... img/s engine-only on OpenVINO 2026.4 CPU bf16, 4 requests (...)".

    Inside the line, before its parenthesis: what follows that stays the tail the C++ CLI prints too."""
    marker = " img/s engine-only"
    if not ran_on or marker not in line:
        return line
    head, _, rest = line.partition(marker)
    return f"{head}{marker} on {ran_on}{rest}"


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
              help="Model file: .onnx (ONNX Runtime or OpenVINO) or .plan/.engine (TensorRT) from der-export.")
@click.option("--triton", metavar="URL",
              help="Instead of --engine: a Triton server (der-serve) at HOST:PORT (HTTP) or grpc://HOST:PORT[/MODEL]; "
                   "--batch-size requests in flight, batched by the server.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, None), help="Images per engine call.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0),
              help="One threshold for every class (default: the card's per-class thresholds).")
@click.option("--top-k", type=click.IntRange(1, None), help="The K highest-scoring labels, whatever their score.")
@click.option("--format", "fmt", type=click.Choice((*FORMATS, "parquet")),
              help="Default: from -o's suffix (.json, .jsonl, .csv), else table. jsonl/json: {path, labels, scores} or "
                   "{path, error}; csv: path, labels, one score column per class, error. Paths that are not UTF-8 are "
                   "written losslessly: invalid bytes as \\xNN, backslashes doubled (see README). parquet (-o X.parquet, "
                   "with --ray): a folder of part files, README \"Bulk scoring on a Ray cluster\".")
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="FILE",  # a folder: --ray's Parquet
              help="Write here (atomically) instead of stdout.")
@click.option("--cam", "cam_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write CADM heat-map overlays DIR/<stem>_<label>.png (needs an engine exported with --cadm).")
@click.option("--strict", is_flag=True, help="Exit 1 if any image could not be read.")
@click.option("--backend", type=click.Choice(["auto", "ort", "trt", "openvino"]), default="auto", show_default=True,
              help="auto: .onnx on ONNX Runtime, .plan on TensorRT. openvino: the .onnx on OpenVINO (CPU; see der-doctor).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
              help="OpenVINO's inference precision (default fp32); refused where the CPU cannot run it natively. "
                   "An INT8 file keeps its INT8 layers.")
@click.option("--providers", help="ONNX Runtime providers in priority order, e.g. cpu or cuda,cpu (default cpu).")
@click.option("--workers", type=click.IntRange(0, None), help="Decode threads (default: up to 4; 0 decodes inline).")
@click.option("--max-pixels", type=click.IntRange(0, None), default=None, metavar="N",
              help="Refuse (an error record) images above N decoded pixels, checked from their header; 0: only the "
                   "decompression-bomb limit. Default 40000000 (README \"Large images\"). With --triton the server's "
                   "limit applies.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", metavar="[ADDRESS]",
              help="Score on a Ray cluster (Ray Data, an actor pool of Predictors): auto or ray://HOST:PORT joins one, "
                   "no ADDRESS starts a local Ray. Put it after PATHS or write --ray=ADDRESS. Needs der-deploy[ray].")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
              help="Also score the files listed here: text (one path per line) or Parquet (column 'path').")
@click.option("--replicas", type=click.IntRange(1, None),
              help="--ray: model replicas (actors); default what the cluster's CPUs/GPUs fit (one CPU kept free).")
@click.option("--replica-cpus", type=click.FloatRange(0, None), help="--ray: CPUs per replica (default 1).")
@click.option("--replica-gpus", type=click.FloatRange(0, None), help="--ray: GPUs per replica (default 0).")
@handle_errors
def main(engine, triton, paths, batch_size, threshold, top_k, fmt, output, cam_dir, strict, backend, precision, providers,
         workers, max_pixels, ray_address, manifest, replicas, replica_cpus, replica_gpus):
    """Classify images (files or folders, walked recursively) with a DER engine.

    Unreadable images are reported on stderr and skipped; the exit code is 0 unless --strict.
    """
    if threshold is not None and top_k is not None:
        raise click.UsageError("--threshold and --top-k are mutually exclusive; give one of them")
    if (engine is None) == (triton is None):
        raise click.UsageError("give --engine MODEL (local) or --triton HOST:PORT (a server), exactly one of them")
    if triton is not None and (backend != "auto" or providers or workers is not None or precision is not None
                               or max_pixels is not None):
        raise click.UsageError("--backend, --precision, --providers, --workers and --max-pixels apply to a local --engine, "
                               "not to --triton (the server's preprocessing model has its own limit)")
    if precision is not None and backend != "openvino":
        raise click.UsageError("--precision applies to --backend openvino only; ONNX Runtime and TensorRT run the file's "
                               "own precision (der-export writes the FP16 and INT8 files)")
    if not paths and manifest is None:
        took = (f"; --ray took {ray_address} as its ADDRESS: put --ray after the paths, or write --ray=ADDRESS"
                if ray_address not in (None, "local") and Path(ray_address).exists() else "")
        raise click.UsageError(f"give image files or folders (PATHS), or --manifest FILE{took}")
    fmt = output_format(fmt, output)
    if ray_address is not None:
        if triton is not None or cam_dir is not None:
            raise click.UsageError("--ray runs the --engine on the cluster; --triton and --cam do not apply")
        return _ray_main(engine, paths, manifest, ray_address, replicas=replicas, cpus=replica_cpus, gpus=replica_gpus,
                         batch_size=batch_size, threshold=threshold, top_k=top_k, fmt=fmt, output=output, strict=strict,
                         backend=backend, precision=precision, providers=providers, workers=workers,
                         max_pixels=max_pixels)
    if fmt == "parquet" or replicas is not None or replica_cpus is not None or replica_gpus is not None:
        raise click.UsageError("Parquet output, --replicas, --replica-cpus and --replica-gpus need --ray")
    from der_deploy.errors import DerError, ImageError
    from der_deploy.fileio import check_writable
    from der_deploy.images import IMAGE_EXTENSIONS, decode_target, load_image
    from der_deploy.pathtext import path_text
    from der_deploy.runtime.pipeline import describe
    from der_deploy.runtime.predictor import Predictor
    from der_deploy.runtime.records import list_inputs

    if output is not None:
        check_writable(output)
    if triton is not None:
        from der_deploy.serve.client import TritonPredictor

        predictor = TritonPredictor(triton, concurrency=batch_size)
    else:
        # Many images keep every core busy with several requests; one image wants the shortest single request.
        ov_mode = None
        if backend == "openvino":
            ov_mode = "throughput" if len(paths) > 1 or any(p.is_dir() for p in paths) else "latency"
        limit = {} if max_pixels is None else {"max_pixels": max_pixels}  # None: the Predictor's service default
        predictor = Predictor(engine, backend=backend, providers=providers, batch_size=batch_size, workers=workers,
                              precision=precision, ov_mode=ov_mode, **limit)
    with predictor as pred:
        card = pred.card
        if top_k is not None and top_k > card.num_classes:
            raise click.BadParameter(f"{top_k} exceeds the model's {card.num_classes} classes", param_hint="--top-k")
        writer_cam = None
        if cam_dir is not None:
            pred.require_cadm()
            from der_deploy.runtime.cam import CamWriter

            writer_cam = CamWriter(cam_dir, card.classes)
        images, scan = list_inputs(paths, manifest)
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
                        # decoded as for inference: shrunk on load for a draft card, within the pixel limit
                        image = load_image(p.path, draft=decode_target(card), max_pixels=pred.max_pixels)
                        writer_cam.write(image, p.cadm, p.labels, p.path)
                    except ImageError as err:  # changed on disk since it was decoded
                        p.labels, p.scores, p.error = [], {}, str(err)
                if p.error is not None:
                    failed += 1
                    click.echo(f"skipped {path_text(p.error)}", err=True)  # click, not rich: never wrapped
                writer.add(p)
            writer.finish()
        stats = pred.last_stats
        ran_on = getattr(pred, "backend_summary", None)
    if failed:
        click.echo(f"{failed} of {len(images)} images could not be read and were skipped"
                   + (" (--strict: exit 1)" if strict else ""), err=True)
    if stats is not None:  # the summary line also counts what the folder walk skipped (dangling links, FIFOs...)
        click.echo(_with_backend(describe(stats), ran_on) + (f"; {scan.describe_skipped()}" if scan.skipped_total else ""),
                   err=True)
    if failed and strict:
        sys.exit(1)



def _ray_main(engine, paths, manifest, address, *, replicas, cpus, gpus, batch_size, threshold, top_k, fmt, output,
              strict, backend, precision, providers, workers, max_pixels):
    """der-infer --ray: the same records, scored by der_deploy.runtime.ray_infer (see README)."""
    from der_deploy.pathtext import path_text
    from der_deploy.runtime.ray_infer import infer_ray

    if engine is None:
        raise click.UsageError("--ray needs --engine MODEL")
    options = {k: v for k, v in (("precision", precision), ("max_pixels", max_pixels)) if v is not None}
    if backend == "openvino":
        options["ov_mode"] = "throughput"
    summary = infer_ray(engine, paths, manifest=manifest, address=address, replicas=replicas, batch_size=batch_size,
                        num_cpus_per_replica=1 if cpus is None else cpus, num_gpus_per_replica=gpus or 0,
                        backend=backend, providers=providers, workers=workers, options=options, output=output, fmt=fmt,
                        threshold=threshold, top_k=top_k, progress=True,
                        on_error=lambda p: click.echo(f"skipped {path_text(p.error)}", err=True))
    if summary.errors:
        click.echo(f"{summary.errors} of {summary.images} images could not be read and were skipped"
                   + (" (--strict: exit 1)" if strict else ""), err=True)
    click.echo(summary.line(), err=True)
    if summary.errors and strict:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
