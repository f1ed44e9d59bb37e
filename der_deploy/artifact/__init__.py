"""The artifact contract, torch-free: what a der-deploy file carries and how every stage reads it.

- ``card``: :class:`ModelCard` (classes, preprocessing, thresholds) -- the one description of a model.
- ``keys``: ONNX ``metadata_props`` keys and Triton config parameter names.
- ``files``: engine kinds by suffix, cheap ONNX metadata reading, :func:`read_card` for any engine file.
- ``sidecar``: the ``<plan>.json`` beside a TensorRT plan (card, build facts, portability checks).
- ``variants``: the file names of one export (``der.onnx`` -> ``der.fp16.onnx``, ``der.int8.onnx``, ...).

Golden files in ``tests/golden`` pin the formats for the Python and the C++ readers alike.
"""
from __future__ import annotations

from .card import ONNX_METADATA_KEY, ModelCard, card_from_metadata
from .files import engine_kind, onnx_metadata, read_card
from .keys import BATCH_KEY, CARD_KEY, INT8_PLAN_KEY, PRECISION_KEY, TRITON_CARD_PARAM, TRITON_ENGINE_FILE_PARAM
from .sidecar import Sidecar, read_sidecar, sidecar_path, write_sidecar
from .variants import variant_paths

__all__ = [
    "BATCH_KEY", "CARD_KEY", "INT8_PLAN_KEY", "ModelCard", "ONNX_METADATA_KEY", "PRECISION_KEY", "Sidecar",
    "TRITON_CARD_PARAM", "TRITON_ENGINE_FILE_PARAM", "card_from_metadata", "engine_kind", "onnx_metadata",
    "read_card", "read_sidecar", "sidecar_path", "variant_paths", "write_sidecar",
]
