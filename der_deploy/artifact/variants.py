"""File names of one export: ``der.onnx`` -> ``der.fp16.onnx``, ``der.int8.onnx``, ``der.plan``, ...

der-export writes them, der-bench measures them and the README documents them; all three use this table.
"""
from __future__ import annotations

from pathlib import Path

# variant -> suffix after the stem
SUFFIXES = {
    "fp32": ".onnx",
    "fp16": ".fp16.onnx",
    "int8": ".int8.onnx",  # U8S8, ONNX Runtime CPU (and OpenVINO)
    "s8s8": ".int8-s8s8.onnx",  # S8S8, TensorRT's INT8 input
    "plan": ".plan",  # TensorRT engine (+ <plan>.json sidecar)
    "calib": ".calib.json",  # calibration ranges shared by both INT8 schemes
    "sensitivity": ".int8-sensitivity.json",  # per-layer INT8 sensitivity (budget search)
}


def stem_of(path: str | Path) -> str:
    name = Path(path).name
    return name[:-5] if name.endswith(".onnx") else name


def variant_paths(base: str | Path) -> dict[str, Path]:
    """Every variant's path beside ``base`` (the FP32 ONNX path, or a stem)."""
    base = Path(base)
    stem = stem_of(base)
    return {key: base.with_name(stem + suffix) for key, suffix in SUFFIXES.items()}
