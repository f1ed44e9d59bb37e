"""User-facing exceptions. The CLI prints ``str(err)`` as one line and exits non-zero, no traceback."""
from __future__ import annotations

from pathlib import Path


class DerError(Exception):
    """Base class of every error that is the user's to fix (bad file, bad option, missing backend)."""

    exit_code = 2


class CardError(DerError):
    """A model card that is malformed or inconsistent."""


class ImageError(DerError):
    """An image that cannot be decoded. Carries the path so batch tools can report and skip it."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(DerError):
    """A dataset folder or annotation file that cannot be read."""


class CheckpointError(DerError):
    """A checkpoint that is not ours, of an unknown architecture, or with missing keys."""


class ExportError(DerError):
    """Export or verification failed."""


class VerificationError(ExportError):
    """Outputs of two backends disagree beyond tolerance."""


class EngineError(DerError):
    """An engine file (.onnx / .plan + sidecar) that is missing, corrupt or built for another machine."""


class BackendUnavailable(DerError):
    """An optional backend (TensorRT, CUDA, onnxruntime-gpu) is not installed or has no device."""


class OutputError(DerError):
    """An output path that cannot be written."""
