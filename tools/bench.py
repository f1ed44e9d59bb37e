"""``der-bench``: one table from one run -- every format's size, accuracy, speed, latency and memory.

Speed rows are measured in separate processes (bench_worker) so each row's peak memory is its own. Speed and
memory live here, never in timed tests.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from der_deploy import metrics
from der_deploy.errors import BackendUnavailable, DerError


@dataclass
class BenchRow:
    format: str
    precision: str
    path: str | None
    size_bytes: int | None = None
    map: float | None = None
    delta_map_pt: float | None = None
    speed: dict[str, dict[str, float]] = field(default_factory=dict)  # batch -> {img_s, p50_ms, p99_ms}
    peak_rss_mb: float | None = None
    note: str = ""
    worst_class: str = ""  # the class that lost most AP vs PyTorch
    worst_delta_ap_pt: float | None = None
    runtime: str = ""  # what ran, read back from the runner (OpenVINO's precision, ORT's providers)


@dataclass
class BenchReport:
    rows: list[BenchRow]
    batches: tuple[int, ...]
    end_to_end: dict[str, Any] = field(default_factory=dict)  # ONNX Runtime FP32
    exports: dict[str, float] = field(default_factory=dict)  # what -> seconds
    end_to_end_openvino: dict[str, Any] = field(default_factory=dict)  # OpenVINO, fastest precision that ran

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "batches": list(self.batches),
                "end_to_end": self.end_to_end, "end_to_end_openvino": self.end_to_end_openvino, "exports": self.exports}


def _worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "der_deploy.tools.bench_worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker failed: {tail[:200]}"}
    return json.loads(lines[-1])


def _export_all(checkpoint: Path, workdir: Path, calib: Path, calib_max: int, want: set[str]) -> tuple[dict[str, Path], dict[str, float]]:
    """der-export's own chain (verified files, der-export's names) into ``workdir``."""
    from der_deploy.artifact.variants import variant_paths
    from der_deploy.export.chain import export_chain

    names = variant_paths(workdir / "der.onnx")
    fp16, int8 = "ort-fp16" in want or "trt" in want, "ort-int8" in want or "ov-int8" in want
    rows = export_chain(checkpoint, names, fp16=fp16, int8=int8, calib=calib if int8 else None, calib_max=calib_max)
    label = {"fp32": "onnx fp32", "fp16": "onnx fp16", "int8 u8s8": "onnx int8 (calibration included)"}
    paths = {key: names[key] for key in ("fp32", "fp16", "int8") if names[key].exists() and
             (key == "fp32" or (key == "fp16" and fp16) or (key == "int8" and int8))}
    return paths, {label[r.precision]: r.seconds for r in rows}


def _trt_plan(fp16_onnx: Path, workdir: Path, max_batch: int) -> Path:
    from der_deploy.backends.tensorrt import builder as tensorrt
    from der_deploy.artifact.profile import BatchProfile

    tensorrt.tensorrt_available()
    return tensorrt.build_engine(fp16_onnx, workdir / "der.plan", precision="fp16",
                                 profile=BatchProfile(1, max_batch, max(max_batch, 32)))


def _sample_images(data: Path | None, split: str, workdir: Path, card) -> tuple[Path | None, list[Path]]:
    """Real images for calibration and the end-to-end run: DATA's split, else a generated set."""
    from der_deploy.datasets import open_dataset

    if data is None:
        from der_deploy.synth import generate

        root = workdir / "bench-images"
        if not (root / "JPEGImages").is_dir():
            generate(root, classes=min(6, card.num_classes), images=64, seed=0, size=max(card.input_size))
        return None, sorted((root / "JPEGImages").glob("*.jpg"))
    return data, list(open_dataset(data, split).paths)


def run_benchmark(checkpoint: str | Path, data: str | Path | None = None, *, workdir: str | Path, split: str = "test",
                  batches: tuple[int, ...] = (1, 8), iters: int = 20, warmup: int = 3, formats: tuple[str, ...] = (
                      "torch", "ort-fp32", "ort-fp16", "ort-int8", "trt"), calib_max: int = 64,
                  timeout: float = 900.0, log=print, int8_onnx: str | Path | None = None) -> BenchReport:
    from der_deploy.train.checkpoint import read_checkpoint
    from der_deploy.artifact.card import ModelCard

    from .evaluate import collect, parity

    checkpoint, workdir = Path(checkpoint), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    card = ModelCard.from_dict(read_checkpoint(checkpoint)["card"])
    data_root, images = _sample_images(Path(data) if data else None, split, workdir, card)
    calib_dir = images[0].parent
    want = set(formats)
    log(f"exporting {checkpoint.name} -> {workdir}/ (fp32, fp16, int8)")
    paths, export_times = _export_all(checkpoint, workdir, calib_dir, calib_max, want)

    rows: list[BenchRow] = []
    spec_base = {"input_size": list(card.input_size), "batches": list(batches), "iters": iters, "warmup": warmup}
    plan = [("torch", "PyTorch eager", "fp32", checkpoint), ("ort-fp32", "ONNX Runtime", "fp32", paths.get("fp32")),
            ("ort-fp16", "ONNX Runtime", "fp16", paths.get("fp16")), ("ort-int8", "ONNX Runtime", "int8 (U8S8)", paths.get("int8"))]
    # OpenVINO runs the very same files; bf16 is its inference precision on the FP32 file (refused, with the
    # reason in the note, on a CPU without native BF16).
    plan += [("ov-fp32", "OpenVINO", "fp32", paths.get("fp32")), ("ov-bf16", "OpenVINO", "bf16", paths.get("fp32")),
             ("ov-int8", "OpenVINO", "int8 (U8S8)", paths.get("int8"))]
    if int8_onnx is not None:  # a der-export --budget-data file, measured beside the plain INT8 one
        plan.append(("ort-int8", "ONNX Runtime", "int8 (U8S8, given)", Path(int8_onnx)))
        plan.append(("ov-int8", "OpenVINO", "int8 (U8S8, given)", Path(int8_onnx)))
    if "trt" in want:
        try:
            plan.append(("trt", "TensorRT", "fp16", _trt_plan(paths["fp16"], workdir, max(batches))))
        except (BackendUnavailable, DerError) as err:
            rows_note = str(err).splitlines()[0]
            plan.append(("trt", "TensorRT", "fp16", None))
            log(f"TensorRT row skipped: {rows_note}")
    ref_probs = targets = None
    probs_of: dict[int, np.ndarray] = {}
    for key, fmt, precision, path in plan:
        if key not in want:
            continue
        row = BenchRow(fmt, precision, str(path) if path else None, size_bytes=Path(path).stat().st_size if path else None)
        row.note = plan_note(path)
        if path is None:
            row.note = "not available on this machine (see der-doctor)"
            rows.append(row)
            continue
        log(f"measuring {fmt} {precision} ...")
        kind = {"torch": "torch", "trt": "trt"}.get(key, "openvino" if key.startswith("ov-") else "ort")
        ov_precision = "bf16" if key == "ov-bf16" else None
        res = _worker({**spec_base, "kind": kind, "path": str(path), "precision": ov_precision}, timeout)
        if "error" in res:
            row.note = res["error"]
        else:
            row.speed, row.peak_rss_mb, row.runtime = res["batches"], res["peak_rss_mb"], res.get("runtime", "")
        if data_root is not None and key != "torch" and "error" not in res:
            _, probs, maybe_ref, targets = collect(path, data_root, split=split,
                                                   reference=checkpoint if ref_probs is None else None,
                                                   backend="openvino" if kind == "openvino" else "auto",
                                                   precision=ov_precision)
            if maybe_ref is not None:
                ref_probs = maybe_ref
            row.map = metrics.mean_average_precision(probs, targets)
            probs_of[id(row)] = probs
        rows.append(row)
    if ref_probs is not None:
        ref_map = metrics.mean_average_precision(ref_probs, targets)
        for row in rows:
            if row.format == "PyTorch eager":
                row.map, row.delta_map_pt = ref_map, 0.0
            elif id(row) in probs_of:
                row.delta_map_pt = (row.map - ref_map) * 100.0
                par = parity(card, probs_of[id(row)], ref_probs, targets, budget_pt=0.0)
                row.worst_class, row.worst_delta_ap_pt = par.drop_class, par.drop_pt
    report = BenchReport(rows, tuple(batches), exports=export_times)
    report.end_to_end = _end_to_end(paths["fp32"], images, max(batches), timeout)
    ov = [r for r in rows if r.format == "OpenVINO" and r.speed and not r.precision.startswith("int8")]
    if ov:  # der-infer --backend openvino on the fastest floating-point precision that ran here
        best = max(ov, key=lambda r: r.speed.get(str(max(batches)), {}).get("img_s", 0.0))
        report.end_to_end_openvino = _end_to_end(paths["fp32"], images, max(batches), timeout, backend="openvino",
                                                 precision=best.precision)
    return report


def _end_to_end(onnx_path: Path, images: list[Path], batch: int, timeout: float, backend: str = "ort",
                precision: str | None = None) -> dict[str, Any]:
    """der-infer's pipeline (decode + preprocess overlapped with inference) vs the engine calls of the same run."""
    res = _worker({"kind": "pipeline", "path": str(onnx_path), "images": [str(p) for p in images], "batch": batch,
                   "input_size": [0, 0], "backend": backend, "precision": precision}, timeout)
    if "error" in res:
        return {"error": res["error"]}
    res["ratio"] = res["end_to_end_img_s"] / res["engine_only_img_s"] if res["engine_only_img_s"] else None
    return res


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b or np.isnan(a) or np.isnan(b) else f"{a / b:.2f}x"


def plan_note(path) -> str:
    """A short note on the budgeted-INT8 plan recorded in an .onnx by der-export --budget-data ("" if none)."""
    from .evaluate import int8_plan

    plan = int8_plan(path) if path is not None else None
    if not plan:
        return ""
    fp, b = plan.get("excluded", []), plan.get("budget", {})
    return (f"INT8 plan: {len(fp)} {plan.get('granularity', 'layer')}s in FP ({', '.join(fp) or 'none'}); budget "
            f"ΔmAP {b.get('max_map_drop')} / class {b.get('max_class_drop')} pt on {plan.get('data')}; "
            f"{plan_checked_on(plan)}")


def plan_checked_on(plan: dict) -> str:
    """Where a budgeted-INT8 plan was checked and with which calibration (plans before version 2: ORT, minmax)."""
    method = (plan.get("calibration") or {}).get("method", "minmax")
    if plan.get("backend", "ort") == "ort":
        return f"checked on ONNX Runtime, {method} calibration"
    return f"checked on OpenVINO with {plan.get('fallback_precision', 'fp32')} fallback, {method} calibration"
