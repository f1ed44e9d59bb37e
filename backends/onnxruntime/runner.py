"""ONNX Runtime runner with explicitly chosen execution providers, never a silent downgrade."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from der_deploy.errors import BackendUnavailable, EngineError

from ..base import BaseRunner, TensorMeta

# Short names accepted on the command line (--providers cpu,cuda) and in the API.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_HOW_TO_GET = {
    "CUDAExecutionProvider": "install onnxruntime-gpu (pip install der-deploy[gpu]) and a CUDA-capable GPU driver",
    "TensorrtExecutionProvider": ("install onnxruntime-gpu (pip install der-deploy[gpu]; ONNX Runtime >= 1.27 for "
                                  "TensorRT 11) with TensorRT libraries on the library path"),
}
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def resolve_providers(providers: str | Iterable[str] | None) -> list[str]:
    """Normalise ``"cpu,cuda"`` / ``["cuda"]`` / full ORT names into ORT provider names, in priority order."""
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p for p in providers.split(",")]
    names: list[str] = []
    for raw in providers:
        key = str(raw).strip()
        if not key:
            continue
        name = PROVIDER_ALIASES.get(key.lower(), key)
        if not name.endswith("ExecutionProvider"):
            raise BackendUnavailable(
                f"unknown execution provider {key!r}; use {', '.join(sorted(set(PROVIDER_ALIASES) - {'trt'}))} "
                "or a full ONNX Runtime provider name"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise BackendUnavailable("no execution provider given; use e.g. --providers cpu")
    return names


def _first_line(err: BaseException, limit: int = 200) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class OnnxRuntimeRunner(BaseRunner):
    """Run an ONNX model (file path or serialized bytes) with ONNX Runtime.

    ``providers``: None (CPU), ``"cpu,cuda"``, or a list of short/full names. Every requested provider must
    be available and must actually be used by the session, else :class:`BackendUnavailable` -- ONNX Runtime
    itself would quietly fall back to CPU. CPU is always appended as the fallback for ops a GPU provider does
    not support (ORT's normal graph partitioning), and CUDA is added under TensorRT when available.
    """

    def __init__(self, path_or_bytes: str | Path | bytes, providers: str | Iterable[str] | None = None, *,
                 intra_op_threads: int | None = None):
        if isinstance(path_or_bytes, (bytes, bytearray)):
            self.source: str | bytes = bytes(path_or_bytes)
            label = "<in-memory ONNX model>"
        else:
            self.source = str(path_or_bytes)
            label = self.source
        super().__init__(f"onnxrt:{label}")
        self.label = label
        self.requested = resolve_providers(providers)
        self.intra_op_threads = intra_op_threads
        self.session = None

    def summary(self) -> str:
        import onnxruntime as ort

        used = self.session.get_providers() if self.session is not None else self.requested
        devices = "+".join(p.replace("ExecutionProvider", "") for p in used)
        return f"ONNX Runtime {'.'.join(ort.__version__.split('.')[:2])} {devices}"

    # --- lifecycle ----------------------------------------------------------------------------
    def _session_providers(self, available: list[str]) -> list[str]:
        missing = [p for p in self.requested if p not in available]
        if missing:
            name = missing[0]
            how = _HOW_TO_GET.get(name, "install an onnxruntime build that includes it")
            raise BackendUnavailable(
                f"ONNX Runtime provider {name} is not available here (available: {', '.join(available)}); {how}"
            )
        chain = list(self.requested)
        if "TensorrtExecutionProvider" in chain and "CUDAExecutionProvider" in available:
            chain.append("CUDAExecutionProvider")
        chain.append("CPUExecutionProvider")
        return list(dict.fromkeys(chain))

    def activate_impl(self) -> None:
        import onnxruntime as ort

        chain = self._session_providers(ort.get_available_providers())
        if isinstance(self.source, str) and not Path(self.source).is_file():
            raise EngineError(f"{self.source}: no such ONNX file; check the path or export one with der-export")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: ORT's warnings would interleave with CLI output
        if self.intra_op_threads is not None:
            opts.intra_op_num_threads = int(self.intra_op_threads)
        try:
            session = ort.InferenceSession(self.source, sess_options=opts, providers=chain)
        except Exception as err:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
            raise EngineError(
                f"{self.label}: cannot load ONNX model ({_first_line(err)}); re-export it with der-export"
            ) from None
        used = session.get_providers()
        dropped = [p for p in self.requested if p not in used]
        if dropped:
            raise BackendUnavailable(
                f"{self.label}: ONNX Runtime could not initialise {dropped[0]} (session uses {', '.join(used)}); "
                "check the CUDA/TensorRT installation or choose --providers cpu explicitly"
            )
        self.session = session
        self._inputs = [self._meta(a) for a in session.get_inputs()]
        self._outputs = [self._meta(a) for a in session.get_outputs()]
        self._output_names = [m.name for m in self._outputs]

    def deactivate_impl(self) -> None:
        self.session = None

    # --- inference ----------------------------------------------------------------------------
    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(self._output_names, dict(feed))
        except Exception as err:
            raise EngineError(f"{self.label}: inference failed ({_first_line(err)})") from None
        return dict(zip(self._output_names, outs))

    # --- metadata -----------------------------------------------------------------------------
    @staticmethod
    def _meta(arg) -> TensorMeta:
        shape = tuple(d if isinstance(d, int) else (d or None) for d in arg.shape)
        return TensorMeta(arg.name, np.dtype(_ORT_TYPES.get(arg.type, np.float32)), shape)

    def _require_active(self) -> None:
        if self.session is None:
            raise EngineError(f"runner {self.name} is not active; call activate() or use it as a context manager")

    @property
    def providers(self) -> list[str]:
        """Providers the live session uses (requested first, then fallbacks)."""
        self._require_active()
        return self.session.get_providers()

    @property
    def custom_metadata(self) -> dict[str, str]:
        self._require_active()
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _batch_dim(self):
        self._require_active()
        return self._inputs[0].shape[0] if self._inputs and self._inputs[0].shape else None

    @property
    def max_batch(self) -> int | None:
        dim = self._batch_dim()
        return dim if isinstance(dim, int) and dim > 0 else None

    @property
    def min_batch(self) -> int:
        # A fixed batch dimension accepts exactly that many rows; callers pad the last chunk.
        return self.max_batch or 1
