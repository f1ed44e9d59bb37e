"""Export stage: fold the DER head, write and verify ONNX (FP32/FP16/INT8); TensorRT plans are built by
``der_deploy.backends.tensorrt.builder`` (re-exported here as ``build_engine``).

The public surface, resolved lazily so ``import der_deploy.export`` loads neither torch, onnx nor TensorRT::

    from der_deploy.export import export_onnx, convert_fp16, quantize_int8, build_engine, parse_profile
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "export_onnx": "der_deploy.export.onnx_export",  # checkpoint -> verified FP32 ONNX (torch)
    "convert_fp16": "der_deploy.export.precision",  # FP32 ONNX -> mixed-precision FP16 ONNX
    "quantize_int8": "der_deploy.export.quantize",  # FP32 ONNX + calibration images -> static INT8 Q/DQ ONNX
    "build_engine": "der_deploy.backends.tensorrt.builder",  # ONNX -> TensorRT plan + sidecar
    "BatchProfile": "der_deploy.artifact.profile", "parse_profile": "der_deploy.artifact.profile",  # --batch MIN:OPT:MAX
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
