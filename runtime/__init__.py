"""Torch-free inference: the Predictor (batched, pipelined decode + engine), thresholds, heat maps, Ray bulk scoring.

Engines run on the backends in ``der_deploy.backends``; the card and file formats are ``der_deploy.artifact``.
Evaluation and benchmarks (which import the exporter and torch) live in ``der_deploy.tools``, Triton in
``der_deploy.serve``. Names are resolved lazily so ``import der_deploy.runtime`` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Predictor": "der_deploy.runtime.predictor", "Prediction": "der_deploy.runtime.predictor",
    "PipelineStats": "der_deploy.runtime.pipeline",
    "CamWriter": "der_deploy.runtime.cam",
    "infer_ray": "der_deploy.runtime.ray_infer",  # bulk scoring on a Ray cluster (der-deploy[ray]; Ray imported on call)
    # kept here for code written against the first layout; their homes are the backends and the contract
    "BaseRunner": "der_deploy.backends.base", "TensorMeta": "der_deploy.backends.base",
    "OnnxRuntimeRunner": "der_deploy.backends.onnxruntime.runner",
    "open_runner": "der_deploy.backends.registry", "read_card": "der_deploy.artifact.files",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
