"""OpenVINO runner: der-export's ONNX files (FP32, FP16, INT8 Q/DQ) compiled for the CPU, never a silent downgrade.

OpenVINO reads the ONNX file as it is (no IR conversion). What it compiled is read back and checked:
``INFERENCE_PRECISION_HINT`` must equal the precision asked for (OpenVINO itself quietly falls back to f32 when a
CPU lacks BF16, and defaults to bf16 on AMX CPUs -- both silent precision changes this runner refuses), and
:meth:`OpenVinoRunner.describe` reports devices, requests, streams, threads, cache use and how many compute layers
run in INT8 / BF16 / FP32 (from the runtime model), so CLIs print what actually ran.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np

from der_deploy.artifact.files import onnx_metadata
from der_deploy.errors import BackendUnavailable, EngineError

from ..base import BaseRunner, TensorMeta
from .core import import_openvino, shared_core
from .cpu import NATIVE, PRECISIONS, cpu_info, missing_line, openvino_capabilities

MODES = ("latency", "throughput")
CACHE_ENV = "DER_OV_CACHE_DIR"
# our precision names <-> OpenVINO element type names (INFERENCE_PRECISION_HINT)
_OV_TYPE = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_FROM_OV = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "u8": "int8", "i8": "int8"}
# Runtime-model layer types that do the arithmetic (what INT8 / BF16 speeds up); the rest is glue.
_COMPUTE = {"Convolution", "FullyConnected", "MatMul", "Deconvolution", "GroupConvolution"}


def _first_line(err: BaseException, limit: int = 200) -> str:
    text = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    # OpenVINO prefixes its messages with "Exception from src/...cpp:123:"; the reason is on a later line
    reason = next((ln for ln in text if not ln.startswith(("Exception from", "Check "))), text[0] if text else "")
    reason = reason or type(err).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _type_name(t) -> str:
    return t.get_type_name() if hasattr(t, "get_type_name") else str(t)


def content_fingerprint(path: Path) -> str:
    """A short hash of the file's bytes. OpenVINO names a cached blob by the model's path and trusts it while the
    file's size and whole-second mtime are unchanged, and a retrained model of the same architecture has the same
    size: re-exported within a second, or deployed with fixed file times (container layers), the cache would serve
    the old model. One cache subfolder per content makes a hit mean the same bytes (~0.2 s for ResNet-101)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=8)).hexdigest()


class OpenVinoRunner(BaseRunner):
    """Run an ONNX file with OpenVINO on the CPU.

    ``precision``: None or "fp32" (exactly FP32 for the non-quantized part), "bf16" or "fp16" -- the inference
    precision hint; an INT8 Q/DQ file runs its quantized layers in INT8 whatever the hint. A precision the CPU
    cannot run natively is :class:`BackendUnavailable`, never an FP32 run.
    ``mode``: "latency" (one infer request) or "throughput" (OpenVINO's optimal number of requests; a batch is
    split across them and run concurrently, results in input order).
    ``cache_dir``: OpenVINO model cache (compiled blobs, one subfolder per file content); default
    ``$DER_OV_CACHE_DIR``, else off.
    ``threads``: INFERENCE_NUM_THREADS (default: OpenVINO's choice, all cores).
    """

    def __init__(self, path: str | Path, *, precision: str | None = None, mode: str = "latency",
                 cache_dir: str | Path | None = None, threads: int | None = None):
        self.path = Path(path)
        super().__init__(f"openvino:{self.path}")
        if precision is not None and precision not in PRECISIONS:
            raise EngineError(f"unknown precision {precision!r} for OpenVINO; use one of {', '.join(PRECISIONS)}")
        if mode not in MODES:
            raise EngineError(f"unknown OpenVINO mode {mode!r}; use latency or throughput")
        if threads is not None and int(threads) < 1:
            raise EngineError(f"threads must be >= 1, got {threads}")
        self.precision = precision or "fp32"
        self.mode = mode
        if cache_dir is None:
            cache_dir = os.environ.get(CACHE_ENV) or None  # empty variable = off
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.threads = int(threads) if threads is not None else None
        self._compiled = None
        self._requests: list = []  # latency: one; throughput: OPTIMAL_NUMBER_OF_INFER_REQUESTS
        self._info: dict = {}
        self.last_parts = 0  # how many requests the last throughput-mode batch was split over

    # --- lifecycle ----------------------------------------------------------------------------
    def _config(self) -> dict:
        config = {"PERFORMANCE_HINT": self.mode.upper(), "INFERENCE_PRECISION_HINT": _OV_TYPE[self.precision]}
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if self.cache_dir is not None:
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise EngineError(f"{self.cache_dir}: cannot create the OpenVINO cache folder ({err.strerror or err}); "
                                  f"choose another with {CACHE_ENV} or cache_dir=") from None
            config["CACHE_DIR"] = str(self.cache_dir / f"onnx-{content_fingerprint(self.path)}")
        return config

    def _check_native(self, caps: list[str] | None) -> None:
        if self.precision == "fp32":
            return
        cap = NATIVE[self.precision][1]
        if caps is None or cap in {c.upper() for c in caps}:
            return
        info = cpu_info()
        if self.precision in info.native_by_flags():  # the CPU has it, this OpenVINO does not offer it
            raise BackendUnavailable(f"{self.path}: OpenVINO does not list {cap} for this CPU ({info.model}; it lists "
                                     f"{', '.join(caps)}); update OpenVINO or use --precision fp32")
        raise BackendUnavailable(f"{self.path}: {missing_line(self.precision, info)}")

    def activate_impl(self) -> None:
        ov = import_openvino()
        if not self.path.is_file():
            raise EngineError(f"{self.path}: no such ONNX file; check the path or export one with der-export")
        # A corrupt file gets the same one-line error as on ONNX Runtime, before OpenVINO probes every frontend
        # (its TensorFlow frontend prints parse errors to stderr).
        onnx_metadata(self.path)
        core = shared_core()  # one per process: see core.py
        caps = openvino_capabilities(core)
        self._check_native(caps)
        config = self._config()
        start = time.perf_counter()
        try:
            # With a cache, compiling from the path lets a hit skip reading the ONNX file (OpenVINO's advice).
            source = str(self.path) if self.cache_dir is not None else core.read_model(str(self.path))
            compiled = core.compile_model(source, "CPU", config)
        except RuntimeError as err:
            raise EngineError(f"{self.path}: OpenVINO cannot compile it ({_first_line(err)}); "
                              "re-export it with der-export or run it with --backend ort") from None
        compile_s = time.perf_counter() - start
        ran = _FROM_OV.get(_type_name(compiled.get_property("INFERENCE_PRECISION_HINT")), "?")
        if ran != self.precision:
            raise BackendUnavailable(f"{self.path}: asked OpenVINO for {self.precision} but it compiled {ran}; "
                                     + (missing_line(self.precision) if self.precision in NATIVE else
                                        "report this OpenVINO version; use --backend ort meanwhile"))
        requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if self.mode == "throughput" else 1
        self._info = {
            "backend": "openvino", "version": ov.get_version().split("-")[0], "device": "CPU",
            "execution_devices": list(compiled.get_property("EXECUTION_DEVICES")),
            "precision": ran, "mode": self.mode, "requests": max(1, requests),
            "streams": int(compiled.get_property("NUM_STREAMS")),
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "compute_layers": self._layer_precisions(compiled),
            "cache_dir": str(self.cache_dir) if self.cache_dir is not None else None,
            "loaded_from_cache": bool(compiled.get_property("LOADED_FROM_CACHE")),
            "compile_s": compile_s, "cpu": cpu_info().model, "capabilities": caps or [],
        }
        self._compiled = compiled
        self._inputs = [self._meta(p) for p in compiled.inputs]
        self._outputs = [self._meta(p) for p in compiled.outputs]
        self._output_names = [m.name for m in self._outputs]
        # Plain requests with start_async / wait rather than AsyncInferQueue: the queue's Python callbacks need the
        # GIL on OpenVINO's threads, and destroying the queue deadlocked here (2026.4.1; openvino PR #37073).
        self._requests = [compiled.create_infer_request() for _ in range(self._info["requests"])]

    def deactivate_impl(self) -> None:
        self._requests = []
        self._compiled = None

    @staticmethod
    def _layer_precisions(compiled) -> dict[str, int]:
        """Compute layers of the runtime model by the precision they run in ({"int8": 20, "fp32": 1})."""
        counts: Counter = Counter()
        for op in compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if "layerType" in rt and rt["layerType"].astype(str) in _COMPUTE:
                prec = rt["runtimePrecision"].astype(str)
                counts[_FROM_OV.get(prec, prec)] += 1
        return dict(sorted(counts.items()))

    # --- inference ----------------------------------------------------------------------------
    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(v) for k, v in feed.items()}
        try:
            if self.mode == "latency":
                out = self._requests[0].infer(feed, share_inputs=True)  # synchronous: the input outlives the call
                return {name: np.asarray(out[i]) for i, name in enumerate(self._output_names)}
            return self._infer_split(feed)
        except RuntimeError as err:
            raise EngineError(f"{self.path}: inference failed ({_first_line(err)})") from None

    def _infer_split(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Throughput mode: the batch in contiguous parts, one per request, run concurrently, joined in order."""
        n = next(iter(feed.values())).shape[0]
        parts = 1 if self.max_batch is not None else min(len(self._requests), n)  # a fixed batch: no split
        bounds = np.linspace(0, n, parts + 1).astype(int)
        chunks = [{k: v[bounds[i]: bounds[i + 1]] for k, v in feed.items()} for i in range(parts)]
        used, failure = [], None
        for request, chunk in zip(self._requests[:parts], chunks):
            try:
                request.start_async(chunk, share_inputs=True)  # chunks stay alive until every wait() below
            except RuntimeError as err:
                failure = err
                break
            used.append(request)
        for request in used:  # every started request is waited for, so none is still busy on the next call
            try:
                request.wait()
            except RuntimeError as err:
                failure = failure or err
        if failure is not None:
            raise failure
        self.last_parts = parts
        # copy out of the requests' buffers: the next call reuses them
        outs = [[r.get_output_tensor(j).data.copy() for j in range(len(self._output_names))] for r in used]
        if parts == 1:
            return dict(zip(self._output_names, outs[0]))
        return {name: np.concatenate([o[j] for o in outs]) for j, name in enumerate(self._output_names)}

    # --- metadata -----------------------------------------------------------------------------
    @staticmethod
    def _meta(port) -> TensorMeta:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        return TensorMeta(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()), shape)

    def _require_active(self) -> None:
        if self._compiled is None:
            raise EngineError(f"runner {self.name} is not active; call activate() or use it as a context manager")

    def describe(self) -> dict:
        """What was compiled and runs: version, devices, precision read back, mode, requests, streams, threads,
        compute layers per precision, cache folder and hit, compile seconds, CPU model and OpenVINO capabilities.

        Kept after :meth:`deactivate` (summaries are printed once the run is over); an error before the first
        activation."""
        if not self._info:
            raise EngineError(f"runner {self.name} was never activated; call activate() or use it as a context manager")
        return dict(self._info)

    def summary(self) -> str:
        """One line for CLI summaries, e.g. "OpenVINO 2026.4 CPU bf16, 4 requests" (+ INT8 layers, cache hit)."""
        info = self.describe()
        version = ".".join(info["version"].split(".")[:2])
        what = info["precision"]
        int8 = info["compute_layers"].get("int8", 0)
        if int8:  # no parentheses: der-infer puts this inside its summary's own
            what = f"{what} + int8 {int8}/{sum(info['compute_layers'].values())} layers"
        n = info["requests"]
        text = f"OpenVINO {version} {'+'.join(info['execution_devices'])} {what}, {n} request{'s' if n != 1 else ''}"
        return text + (", cached" if info["loaded_from_cache"] else "")

    @property
    def max_batch(self) -> int | None:
        self._require_active()
        dim = self._inputs[0].shape[0] if self._inputs and self._inputs[0].shape else None
        return dim if isinstance(dim, int) and dim > 0 else None

    @property
    def min_batch(self) -> int:
        # A fixed batch dimension accepts exactly that many rows; callers pad the last chunk.
        return self.max_batch or 1
