"""Torch-free runtime: backend runners, the Predictor, evaluation and benchmarks.

Names are resolved lazily so ``import der_deploy.runtime`` stays cheap (no onnxruntime, never torch).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BaseRunner": "base", "TensorMeta": "base",
    "OnnxRuntimeRunner": "onnxrt",
    "open_runner": "artifacts", "read_card": "artifacts",
    "Predictor": "predictor", "Prediction": "predictor",
    "PipelineStats": "pipeline",
    "CamWriter": "cam",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
