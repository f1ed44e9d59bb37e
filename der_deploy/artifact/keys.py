"""Names that cross a file boundary: ONNX ``metadata_props`` keys and Triton config parameters.

Every writer and reader imports them from here (Python); the C++ SDK's copies are checked against the golden
files in ``tests/golden``. Changing a value breaks every artifact already written: add a key, never rename one.
"""
from __future__ import annotations

# ONNX metadata_props
CARD_KEY = "der_deploy.card"  # ModelCard JSON (der_deploy.artifact.card)
PRECISION_KEY = "der_deploy.precision"  # "fp32", "fp16", "int8-u8s8", "int8-s8s8"
BATCH_KEY = "der_deploy.batch"  # the MIN:OPT:MAX asked for at export; a hint for TensorRT profiles
INT8_PLAN_KEY = "der_deploy.int8_plan"  # JSON: layers kept in floating point and the measured budget check

# Triton model config parameters (der_deploy.serve)
TRITON_CARD_PARAM = "der_card"  # the card JSON, in every generated model's config
TRITON_ENGINE_FILE_PARAM = "der_engine_file"  # the engine file of a Python-backend engine model
TRITON_ENGINE_BACKEND_PARAM = "der_engine_backend"  # "ort" or "openvino": what runs that .onnx
TRITON_ENGINE_PRECISION_PARAM = "der_engine_precision"  # OpenVINO's inference precision there ("fp32", "bf16")
TRITON_MAX_PIXELS_PARAM = "der_max_pixels"  # the preprocessing model's image-size limit (decimal; "0": none)
