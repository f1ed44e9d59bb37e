"""``der-bench``: export every format of one checkpoint and print one table of size, accuracy and speed."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from ._common import handle_errors


def _batches(ctx, param, value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: use comma-separated batch sizes, e.g. 1,8") from None
    if not out or min(out) < 1:
        raise click.BadParameter("batch sizes must be positive")
    return out


FORMATS = ("torch", "ort-fp32", "ort-fp16", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8", "trt")

NOTE_WIDTH = 60  # characters of a row's note in the table; longer notes become footnotes


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True, help="Split of DATA for mAP and the end-to-end run.")
@click.option("--workdir", type=click.Path(path_type=Path), help="Where exported files go (default: a temp folder).")
@click.option("--batches", default="1,8", show_default=True, callback=_batches, help="Batch sizes to time.")
@click.option("--iters", default=20, show_default=True, type=click.IntRange(1), help="Timed iterations per batch size.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(0))
@click.option("--formats", default=",".join(FORMATS), show_default=True, help="Rows to run (comma-separated).")
@click.option("--calib-max", default=64, show_default=True, type=click.IntRange(1), help="Calibration images for INT8.")
@click.option("--int8-onnx", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Also measure this INT8 ONNX (e.g. der-export --budget-data's der.int8.onnx); its plan is shown.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the report as JSON.")
@handle_errors
def main(model, data, split, workdir, batches, iters, warmup, formats, calib_max, int8_onnx, json_out):
    """Benchmark MODEL (a der-train checkpoint) as PyTorch eager, ONNX Runtime FP32/FP16/INT8, OpenVINO
    FP32/BF16/INT8 (the same files) and TensorRT, side by side in one table.

    With DATA, also reports mAP and ΔmAP vs PyTorch on its split. Speed is measured on random inputs at each
    batch size, every row in its own process (peak memory = that process's peak RSS).
    """
    from der_deploy.errors import DerError
    from der_deploy.fileio import human_size, write_text
    from der_deploy.progress import err_console, out_console, table
    from der_deploy.tools.bench import ratio, run_benchmark

    chosen = tuple(f.strip() for f in formats.split(",") if f.strip())
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown:
        raise DerError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    with tempfile.TemporaryDirectory(prefix="der-bench-") as tmp:
        report = run_benchmark(model, data, workdir=workdir or Path(tmp), split=split, batches=batches, iters=iters,
                               warmup=warmup, formats=chosen, calib_max=calib_max, int8_onnx=int8_onnx,
                               log=lambda m: err_console.print(m, style="dim", markup=False))

    def speed(row, b, key):
        v = row.speed.get(str(b), {}).get(key)
        return "-" if v is None else f"{v:.1f}"

    b_lat = batches[0]
    cols = ["format", "precision", "size", "mAP", "ΔmAP (pt)", "worst class ΔAP", *[f"img/s b{b}" for b in batches],
            f"p50 ms b{b_lat}", f"p99 ms b{b_lat}", "peak MB", "note"]
    rows, footnotes = [], []
    for r in report.rows:
        worst = "-" if r.worst_delta_ap_pt is None else f"{r.worst_class} {r.worst_delta_ap_pt:+.2f}"
        note = r.note or r.runtime
        if len(note) > NOTE_WIDTH:  # a refusal's full sentence goes under the table, so the table stays readable
            footnotes.append(f"[{len(footnotes) + 1}] {r.format} {r.precision}: {note}")
            note = f"{note[:NOTE_WIDTH - 6].rsplit(' ', 1)[0]}… [{len(footnotes)}]"
        rows.append((r.format, r.precision, human_size(r.size_bytes) if r.size_bytes else "-",
                     "-" if r.map is None else f"{100 * r.map:.2f}",
                     "-" if r.delta_map_pt is None else f"{r.delta_map_pt:+.3f}", worst,
                     *[speed(r, b, "img_s") for b in batches], speed(r, b_lat, "p50_ms"), speed(r, b_lat, "p99_ms"),
                     "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}", note))
    out_console.print(table(f"der-bench {model.name}", cols, rows))
    for line in footnotes:
        out_console.print(line)

    b_big = batches[-1]
    def ips(fmt, prec):
        return next((r.speed.get(str(b_big), {}).get("img_s") for r in report.rows if r.format == fmt and r.precision.startswith(prec)), None)
    e2e = report.end_to_end
    out_console.print(
        f"ratios at batch {b_big}: ORT FP32 / PyTorch eager = {ratio(ips('ONNX Runtime', 'fp32'), ips('PyTorch eager', 'fp32'))}, "
        f"INT8 / FP32 = {ratio(ips('ONNX Runtime', 'int8'), ips('ONNX Runtime', 'fp32'))}, "
        f"FP16 / FP32 = {ratio(ips('ONNX Runtime', 'fp16'), ips('ONNX Runtime', 'fp32'))}; "
        f"OpenVINO vs ORT FP32: fp32 {ratio(ips('OpenVINO', 'fp32'), ips('ONNX Runtime', 'fp32'))}, "
        f"bf16 {ratio(ips('OpenVINO', 'bf16'), ips('ONNX Runtime', 'fp32'))}, "
        f"int8 {ratio(ips('OpenVINO', 'int8'), ips('ONNX Runtime', 'fp32'))} "
        f"(vs ORT INT8 {ratio(ips('OpenVINO', 'int8'), ips('ONNX Runtime', 'int8'))})")
    for label, res in (("end to end (der-infer pipeline", e2e),
                       ("end to end on OpenVINO (der-infer --backend openvino", report.end_to_end_openvino)):
        if res.get("error"):
            out_console.print(f"{label}): not measured ({res['error']})")
        elif res:
            out_console.print(
                f"{label}, {res['images']} images, batch {res['batch']}): {res['end_to_end_img_s']:.1f} img/s vs "
                f"engine-only {res['engine_only_img_s']:.1f} img/s in the same run "
                f"({ratio(res['end_to_end_img_s'], res['engine_only_img_s'])})")
    out_console.print("export times: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.exports.items()))
    if json_out:
        write_text(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
