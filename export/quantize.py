"""Static INT8 Q/DQ quantization of der-export's FP32 ONNX with onnxruntime.quantization.

Two schemes, because the two backends want different ones:
- ``u8s8`` (ONNX Runtime CPU): uint8 asymmetric activations, int8 symmetric per-channel weights. ORT's x86
  kernels fuse this form (3.7x FP32 on resnet18 here).
- ``s8s8`` (TensorRT): int8 activations and weights, both symmetric (zero point 0), per-channel weights.
  TensorRT requires this; ORT CPU runs it at FP32 speed.
The fused head (GMP, the ½θ MatMul, max, add, sigmoid) is excluded from quantization: it is a tiny share
of the FLOPs, and quantizing the two maxima and their sum would put INT8 rounding straight onto the logits.
``quant_pre_process`` is not used: its symbolic shape inference crashed on the dynamo graph (ORT 1.32);
quantize_static runs plain ONNX shape inference itself.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from der_deploy.errors import DerError, ExportError
from der_deploy.fileio import check_writable

from .calibration import (DEFAULT_CALIB_MAX, cached_ranges_valid, calibrate, calibration_images, calibration_key,
                          check_method, method_cache, ort_method)
from der_deploy.artifact.keys import CARD_KEY, INT8_PLAN_KEY, PRECISION_KEY

from .graph import card_from_model, check_model, head_node_names, load_onnx, metadata, save_onnx, set_metadata

SCHEMES = ("u8s8", "s8s8")


@contextlib.contextmanager
def _quiet_root_logger():
    """quantize_static logs advice ("consider pre-processing") on the root logger; keep stderr for errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def default_cache(src: str | Path) -> Path:
    """der.onnx -> der.calib.json: shared by every INT8 variant made from the same FP32 file."""
    from der_deploy.artifact.variants import variant_paths

    return variant_paths(src)["calib"]


def quantize_int8(
    src_onnx: str | Path,
    dst: str | Path,
    calib: str | Path | Sequence[str | Path],
    *,
    scheme: str = "u8s8",
    per_channel: bool = True,
    calib_max: int = DEFAULT_CALIB_MAX,
    cache: str | Path | None = None,
    verify: Callable[[Path], object] | None = None,
    exclude: Sequence[str] = (),
    only: Sequence[str] = (),
    half_excluded: bool = False,
    plan: str | None = None,
    require_cached: bool = False,
    method: str | None = None,
) -> Path:
    """Write an INT8 Q/DQ variant of FP32 ``src_onnx`` to ``dst``, calibrated on images from ``calib``.

    Ranges are read from / stored in ``cache`` (default :func:`default_cache`); ``verify(tmp_path)`` may veto
    the write. The card and der_deploy metadata are carried over.
    ``exclude``: more node names kept in floating point: FP weights, FP arithmetic, no Q/DQ of their own; they
    read the INT8 producer's dequantized output (the boundary stays on the producer's output so that it can
    remain a fused INT8 kernel in ORT and TensorRT: rewiring the excluded node to the tensor before the Q
    left the producer unfused and cost resnet18 half its INT8 speed here). ``half_excluded`` runs them in
    FP16 (what TensorRT's strongly typed engine then does). ``only``: quantize just these nodes (layer
    sensitivity). ``plan``: JSON stored under :data:`~der_deploy.artifact.keys.INT8_PLAN_KEY`. ``require_cached``: fail instead of
    calibrating (a search must reuse one calibration pass).
    ``method``: calibration method (:data:`~.calibration.METHODS`), each with its own cache beside ``cache``
    (:func:`~.calibration.method_cache`). Default: the method ``plan`` records (the file must carry the ranges its
    plan was checked with), else minmax; a ``method`` that contradicts the plan is an error.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    method = _method_of(plan, method)
    if scheme not in SCHEMES:
        raise DerError(f"unknown INT8 scheme {scheme!r}; use u8s8 (ONNX Runtime CPU) or s8s8 (TensorRT)")
    dst = check_writable(dst)
    model = load_onnx(src_onnx)
    card = card_from_model(model, str(src_onnx))
    meta = metadata(model)
    if meta.get(PRECISION_KEY, "fp32") != "fp32":
        raise ExportError(f"{src_onnx}: is a {meta[PRECISION_KEY]} model; quantize the FP32 export")
    keep = [n for n in exclude if n]
    exclude = head_node_names(model) + keep
    paths = calibration_images(calib, calib_max)
    cache = method_cache(cache if cache is not None else default_cache(src_onnx), method)
    check_writable(cache)
    key = calibration_key(src_onnx, paths, card, method)
    if not cached_ranges_valid(cache, key):
        if require_cached:
            raise ExportError(f"{cache}: calibration ranges missing or stale for {src_onnx}; calibrate once before "
                              "the search")
        calibrate(src_onnx, paths, card, method=method, cache=cache, key=key, input_name=model.graph.input[0].name)
    act = QuantType.QUInt8 if scheme == "u8s8" else QuantType.QInt8
    extra = {"WeightSymmetric": True, "ActivationSymmetric": scheme == "s8s8"}
    with tempfile.TemporaryDirectory(prefix="der-quant-") as tmpdir:
        out = Path(tmpdir) / "model.int8.onnx"
        try:
            with _quiet_root_logger():  # always from the cache: calibrate() above computed it once per method
                quantize_static(
                    str(src_onnx), str(out), None,
                    quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=act,
                    weight_type=QuantType.QInt8, nodes_to_exclude=exclude, calibrate_method=ort_method(method),
                    nodes_to_quantize=list(only) or None,
                    extra_options=extra, calibration_cache_path=str(cache),
                )
        except DerError:
            raise
        except Exception as err:  # onnxruntime.quantization raises plain exceptions
            msg = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise ExportError(f"{dst}: INT8 quantization ({scheme}) failed: {msg}") from None
        qmodel = load_onnx(out)
    if keep and half_excluded:
        qmodel = half_nodes(qmodel, keep)
    for k in list(meta):  # the quantizer rebuilds the model; put every der_deploy.* key back
        if not k.startswith("der_deploy."):
            meta.pop(k)
    meta.pop(CARD_KEY, None)
    meta[PRECISION_KEY] = f"int8-{scheme}"
    meta.pop(INT8_PLAN_KEY, None)
    if plan is not None:
        meta[INT8_PLAN_KEY] = plan
    set_metadata(qmodel, card, **meta)
    qmodel = check_model(qmodel, str(dst))
    return save_onnx(qmodel, dst, verify)


def _method_of(plan: str | None, method: str | None) -> str:
    """The calibration method to quantize with: ``method``, else the plan's (plans before version 2: minmax)."""
    import json

    planned = None
    if plan is not None:
        try:
            planned = (json.loads(plan).get("calibration") or {}).get("method")
        except (ValueError, AttributeError):
            raise DerError("the INT8 plan to store is not a JSON object; pass Int8Plan.to_json()") from None
    if method is not None and planned is not None and method != planned:
        raise DerError(f"calibration method {method!r} contradicts the INT8 plan's {planned!r}; quantize with the "
                       "plan's method (or leave method unset)")
    return check_method(method or planned or "minmax")


def half_nodes(qmodel, nodes: Sequence[str]):
    """Run the excluded ``nodes`` of a quantized model in FP16 (Casts at the boundary, FP16 weights)."""
    from .precision import to_fp16

    present = {n.name for n in qmodel.graph.node} & set(nodes)
    return to_fp16(qmodel, half=present) if present else qmodel
