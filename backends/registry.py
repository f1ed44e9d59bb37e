"""Engine file + backend name -> an inactive runner. The one place that knows which backend runs which file.

``backend``:
- ``"auto"``: by suffix -- ``.onnx`` on ONNX Runtime (CPU unless ``providers`` says otherwise), ``.plan``/``.engine``
  on TensorRT. OpenVINO is never chosen by ``auto``: it runs only when asked for (``"openvino"``), and
  ``der-doctor`` says when this CPU would profit from it.
- ``"ort"``: ONNX Runtime, ``.onnx`` only; ``"trt"``: TensorRT, ``.plan``/``.engine`` only;
- ``"openvino"``: OpenVINO on the CPU, ``.onnx`` only (the same FP32 / FP16 / INT8 Q/DQ files).

Runner options are checked against the backend here, so a misplaced option is a one-line error and never ignored:
``providers`` is ONNX Runtime's, ``precision`` / ``mode`` / ``cache_dir`` are OpenVINO's, ``intra_op_threads`` is
the thread count of either CPU backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from der_deploy.artifact.files import engine_kind
from der_deploy.errors import EngineError

from .base import BaseRunner

BACKENDS = ("auto", "ort", "trt", "openvino")


def open_runner(engine_path: str | Path, *, backend: str = "auto", providers: str | Iterable[str] | None = None,
                intra_op_threads: int | None = None, precision: str | None = None, mode: str | None = None,
                cache_dir: str | Path | None = None) -> BaseRunner:
    """An inactive runner for ``engine_path`` (see the module doc for ``backend`` and which options apply)."""
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    path = Path(engine_path)
    kind = engine_kind(path)
    if backend != "openvino":
        given = [name for name, v in (("precision", precision), ("mode", mode), ("cache_dir", cache_dir)) if v is not None]
        if given:
            raise EngineError(f"{path}: {given[0]} applies to OpenVINO only; add --backend openvino, or pick the FP16/INT8 "
                              "file from der-export for ONNX Runtime / TensorRT")
    if backend == "openvino":
        if kind != "onnx":
            raise EngineError(f"{path} is a TensorRT engine, which OpenVINO cannot run; give it the .onnx file from der-export")
        if providers is not None:
            raise EngineError(f"{path}: --providers applies to ONNX Runtime only; OpenVINO always runs on the CPU")
        from .openvino.runner import OpenVinoRunner  # imports openvino itself only on activate()

        return OpenVinoRunner(path, precision=precision, mode=mode or "latency", cache_dir=cache_dir,
                              threads=intra_op_threads)
    if kind == "onnx":
        if backend == "trt":
            raise EngineError(
                f"{path} is an ONNX model, not a TensorRT engine; build a .plan with der-export, or run it on "
                "ONNX Runtime's TensorRT provider with --backend ort --providers tensorrt"
            )
        from .onnxruntime.runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, providers, intra_op_threads=intra_op_threads)
    if backend == "ort":
        raise EngineError(f"{path} is a TensorRT engine; use --backend trt (or auto), or pass the .onnx file to ONNX Runtime")
    if providers is not None:
        raise EngineError(f"{path}: --providers applies to ONNX Runtime only; a TensorRT engine always runs on its GPU")
    from .tensorrt.runner import TrtRunner  # imports tensorrt itself only on activate()

    return TrtRunner(path)
