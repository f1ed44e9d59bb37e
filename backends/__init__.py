"""Inference backends, one folder each (after Polygraphy's ``backend/<name>/``): a backend owns building and
running its engines.

- ``base``: :class:`BaseRunner` (activate / infer / deactivate) and :class:`TensorMeta`.
- ``onnxruntime/``: :class:`OnnxRuntimeRunner` (CPU, CUDA or TensorRT execution providers, never a silent downgrade).
- ``tensorrt/``: ``builder`` (ONNX -> plan + sidecar), ``runner`` (:class:`TrtRunner`), ``cuda`` (cuda-python helpers).
- ``registry``: :func:`open_runner` -- an engine file and a backend name to an inactive runner.

Heavy packages (onnxruntime, tensorrt, cuda-python) are imported only when a runner is built or activated.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BaseRunner": "base", "TensorMeta": "base",
    "open_runner": "registry", "BACKENDS": "registry",
    "OnnxRuntimeRunner": "onnxruntime.runner",
    "TrtRunner": "tensorrt.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
