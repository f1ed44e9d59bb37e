"""The export chain, one function for every caller (der-export, der-bench): checkpoint -> verified FP32 ONNX ->
FP16 and INT8 variants, each checked against the reference before it lands. TensorRT plans are built from its
output by :mod:`der_deploy.backends.tensorrt.builder`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from der_deploy.artifact.profile import BatchProfile, parse_profile
from der_deploy.errors import VerificationError


@dataclass
class Row:
    """One file written: where, what, how long, and its verification (a CompareResult) when there was one."""
    path: Path
    precision: str
    seconds: float
    result: object = None


def export_chain(model: Path, names: dict[str, Path], *, fp16: bool = False, int8: bool = False, s8s8: bool = False,
                 calib: Path | None = None, calib_max: int = 256, cadm: bool = False,
                 profile: BatchProfile | None = None, opset: int | None = None, samples: Path | None = None,
                 budget: dict | None = None, decode: str | None = None) -> list[Row]:
    """Checkpoint (or FP32 ``.onnx``) -> the FP32, FP16 and INT8 files named by ``names`` (see
    :func:`der_deploy.artifact.variants.variant_paths`), each verified before it is renamed into place.

    The reference is the PyTorch model for a checkpoint, the FP32 ONNX in ONNX Runtime for an ``.onnx`` MODEL.
    ``budget`` (data, split, max_map_drop, max_class_drop, min_speedup) decides the INT8 layers kept in floating
    point before any INT8 file is written, so a refusal leaves none behind. ``decode`` ("full"/"draft") replaces
    the checkpoint card's image decoding in every file written (verification runs on tensors, so it is unaffected).
    """
    from_onnx = Path(model).suffix.lower() == ".onnx"
    profile = profile if profile is not None else parse_profile("1:32")
    from der_deploy.export.verify import reference_outputs, run_onnx, sample_inputs, verify_onnx

    rows: list[Row] = []
    real = samples if samples is not None else calib
    if from_onnx:
        from der_deploy.export.graph import read_onnx_card

        src = model
        card = read_onnx_card(src)
        images, source = sample_inputs(card, real)
        ref = run_onnx(src, images)  # no training model here: the FP32 ONNX is the reference
        ref_name = f"FP32 {src.name}"
    else:
        from der_deploy.export.onnx_export import export_onnx_report
        from der_deploy.train.checkpoint import load_checkpoint

        t0 = time.perf_counter()
        net, card = load_checkpoint(model)
        if decode is not None:
            card = card.replace(decode=decode)
        report = export_onnx_report((net, card), names["fp32"], opset=opset, batch=profile, cadm=cadm, samples=real)
        rows.append(Row(names["fp32"], "fp32", time.perf_counter() - t0, report.verification))
        src = names["fp32"]
        images, source = sample_inputs(card, real)
        ref = reference_outputs(net, images, cadm=cadm)
        ref_name = "PyTorch"

    def checked(precision: str, path: Path, tol: str, fix: str = ""):
        row = Row(path, precision, 0.0)

        def verify(tmp: Path) -> None:
            row.result = verify_onnx(tmp, ref, images, tol, title=f"verify {path.name} ({precision}, {source})")
            try:
                row.result.raise_if_failed(f"{path}: {precision} ONNX vs {ref_name}")
            except VerificationError as err:
                raise VerificationError(f"{err}{fix}") from None

        return row, verify

    if fp16:
        from der_deploy.export.precision import convert_fp16

        row, verify = checked("fp16", names["fp16"], "fp16")
        t0 = time.perf_counter()
        convert_fp16(src, names["fp16"], verify=verify)
        row.seconds = time.perf_counter() - t0
        rows.append(row)
    plan = None
    if int8 and budget is not None:  # decide the FP layers first: a refusal must leave no INT8 file behind
        from der_deploy.export.int8_budget import Budget, decide

        plan = decide(src, calib, data=budget["data"], split=budget["split"], calib_max=calib_max, cache=names["calib"],
                      budget=Budget(budget["max_map_drop"], budget["max_class_drop"]),
                      min_speedup=budget["min_speedup"], target=names["int8"],
                      **{k: budget[k] for k in ("backend", "fallback_precision", "calibration") if k in budget})
    for scheme, key, wanted in (("u8s8", "int8", int8), ("s8s8", "s8s8", s8s8)):
        if not wanted:
            continue
        from der_deploy.export.quantize import quantize_int8

        # Plain INT8 of a trunk that quantizes badly (depthwise / squeeze-excitation trunks such as MobileNetV3)
        # is refused; the user's way out is the budget search, or not using INT8 for it.
        fix = ("; keep the sensitive layers in floating point with --budget-data DATA, or deploy the FP32/FP16 file"
               if plan is None else "")
        row, verify = checked(f"int8 {scheme}", names[key], "int8", fix)
        t0 = time.perf_counter()
        quantize_int8(src, names[key], calib, scheme=scheme, calib_max=calib_max, cache=names["calib"], verify=verify,
                      **({} if plan is None else dict(exclude=plan.nodes, half_excluded=scheme == "s8s8",
                                                      plan=plan.to_json())))
        row.seconds = time.perf_counter() - t0
        rows.append(row)
    return rows
