"""der-deploy: DER multi-label classifier from PyTorch training to ONNX Runtime / TensorRT inference.

The core package is torch-free: model card, image preprocessing, metrics, dataset readers and the CLI.
The stages live in ``der_deploy.train`` (torch), ``der_deploy.export`` (torch + onnx) and
``der_deploy.runtime`` (numpy + onnxruntime / tensorrt).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("der-deploy")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"

from .artifact.card import ModelCard
from .errors import DerError

__all__ = ["ModelCard", "DerError", "__version__"]
