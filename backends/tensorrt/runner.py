"""TensorRT runner: a ``der.plan`` on one GPU through the name-based I/O API and ``execute_async_v3``.

Nothing heavy at import: tensorrt and cuda-python load in :meth:`TrtRunner.activate`. The sidecar is
checked against the running TensorRT and GPU *before* deserializing, so a plan from another machine is
refused with a rebuild hint instead of a TensorRT crash. Buffers are sized once for the profile's
maximum batch (device memory + pinned host memory); larger batches run in chunks, smaller ones than the
profile minimum are zero-padded and trimmed.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from der_deploy.errors import BackendUnavailable, EngineError

from ..base import BaseRunner, TensorMeta

TRT_MISSING = ("TensorRT is not installed; install it with `pip install der-deploy[trt]` on a machine with an "
               "NVIDIA GPU")


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(TRT_MISSING) from None
    except Exception as err:  # e.g. OSError: libnvinfer.so missing
        raise BackendUnavailable(f"TensorRT is installed but cannot be loaded ({type(err).__name__}: {err}); "
                                 "reinstall it with `pip install der-deploy[trt]`") from None
    return trt


def load_tensorrt(tensorrt=None):
    """The tensorrt module to use: ``tensorrt`` itself when it is a module, what it returns when it is a
    zero-argument loader (called now), or the real :func:`import_tensorrt` when None. Tests pass a fake here."""
    if tensorrt is None:
        return import_tensorrt()
    return tensorrt() if callable(tensorrt) else tensorrt


_LOGGER: tuple = (None, None)  # (tensorrt module, its CaptureLogger)


def make_logger(trt):
    """The process's capturing trt.ILogger (errors and warnings kept, so failures can quote them in one line).

    One per process: TensorRT adopts the first logger it sees as its global one, so a second logger
    would miss some messages. ``reset()`` is called at the start of every operation that quotes it.
    """
    global _LOGGER
    if _LOGGER[0] is trt:
        _LOGGER[1].reset()
        return _LOGGER[1]

    class CaptureLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg):
            sev = trt.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(str(msg).strip())
            elif severity == sev.WARNING:
                self.warnings.append(str(msg).strip())

        def reset(self) -> None:
            self.errors.clear()
            self.warnings.clear()

        def summary(self) -> str:
            # Some failures are only warnings, e.g. "CUDA initialization failure with error: 35".
            return " | ".join(self.errors[-5:] or self.warnings[-3:]).replace("\n", " ") or "TensorRT reported no error"

    _LOGGER = (trt, CaptureLogger())
    return _LOGGER[1]


NULLPTR_MARK = "factory function returned nullptr"
_CUDA_ERROR_35 = re.compile(r"\berror:?\s*35\b")


def construct(factory, *args, what: str, logger, exc: type = EngineError):
    """``factory(*args)`` for TensorRT's pybind11 factory constructors (``trt.Builder``, ``trt.Runtime``,
    ``trt.OnnxParser``). They never return None: when TensorRT hands back nullptr, pybind11 raises
    ``TypeError("pybind11::init(): factory function returned nullptr")``. Turn that into ``exc`` quoting the
    logger; CUDA error 35 (cudaErrorInsufficientDriver) becomes BackendUnavailable with the driver hint."""
    try:
        obj = factory(*args)
    except TypeError as err:
        if NULLPTR_MARK not in str(err):
            raise  # a real argument mistake: ours to fix, not the user's
        obj = None
    if obj is not None:
        return obj
    said = logger.summary()
    if _CUDA_ERROR_35.search(said):
        raise BackendUnavailable(f"TensorRT could not create {what} ({said}): the NVIDIA driver is too old for the CUDA "
                                 "version this TensorRT wheel was built for; upgrade the driver, or install the CUDA 12 "
                                 "builds of TensorRT and cuda-python: pip install der-deploy[trt-cu12]")
    raise exc(f"TensorRT could not create {what} ({said}); check the CUDA driver with der-doctor")


class TrtRunner(BaseRunner):
    """Same interface as the ONNX Runtime runner: ``with TrtRunner("der.plan") as r: r.infer({"images": x})``.

    ``tensorrt``: the module to run on, or a zero-argument loader returning it (called at activation); None
    imports the installed TensorRT then.
    """

    def __init__(self, plan_path: str | Path, *, device: int = 0, tensorrt=None):
        self.plan_path = Path(plan_path)
        self.device = int(device)
        self._tensorrt_source = tensorrt  # loaded lazily, like the real import
        super().__init__(f"tensorrt:{self.plan_path}")
        self.warnings: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self._trt = self._logger = self._runtime = self._engine = self._context = self._stream = None
        self._inputs: list[TensorMeta] = []
        self._outputs: list[TensorMeta] = []
        self._profile: dict[str, tuple] = {}  # input name -> (min, opt, max) shapes
        self._device_ptrs: dict[str, int] = {}
        self._host_ptrs: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}  # flat pinned views, sized for the max batch
        self.sidecar = None

    # --- lifecycle ----------------------------------------------------------------------------
    def activate_impl(self) -> None:
        try:
            self._activate()
        except BaseException:
            self._release()
            raise

    def _activate(self) -> None:
        from . import cuda
        from der_deploy.artifact.sidecar import check_compatible, read_sidecar

        trt = load_tensorrt(self._tensorrt_source)
        if not self.plan_path.is_file():
            raise EngineError(f"{self.plan_path}: no such TensorRT plan; build one with der-export model.onnx --trt")
        sidecar = read_sidecar(self.plan_path)
        gpu = cuda.gpu_info(self.device)
        self.warnings = check_compatible(sidecar, str(trt.__version__), gpu.name, gpu.compute_capability, plan=self.plan_path)
        self._warn(self.warnings)
        data = self.plan_path.read_bytes()
        if sidecar.plan_sha256 and hashlib.sha256(data).hexdigest() != sidecar.plan_sha256:
            raise EngineError(f"{self.plan_path} does not match its sidecar (SHA-256 differs); the plan was replaced or "
                              "corrupted -- rebuild both with der-export --trt")
        self.sidecar = sidecar
        cuda.set_device(self.device)

        self._trt, self._logger = trt, make_logger(trt)
        self._runtime = construct(trt.Runtime, self._logger, what="a runtime", logger=self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise EngineError(f"{self.plan_path}: TensorRT cannot deserialize the plan ({self._logger.summary()}); "
                              "rebuild it from the ONNX: der-export model.onnx --trt")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(f"{self.plan_path}: TensorRT could not create an execution context "
                              f"({self._logger.summary()}); the GPU may be out of memory")
        self._enumerate_io()
        self._stream = cuda.stream_create()
        self._allocate()

    def _enumerate_io(self) -> None:
        trt, engine = self._trt, self._engine
        for i in range(int(engine.num_io_tensors)):
            name = engine.get_tensor_name(i)
            try:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            except TypeError:
                raise EngineError(f"{self.plan_path}: tensor {name!r} has type {engine.get_tensor_dtype(name)} with no "
                                  "numpy equivalent; der-deploy plans use float32/float16 I/O -- rebuild with der-export") from None
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            meta = TensorMeta(name, dtype, tuple(None if d < 0 else d for d in shape))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(meta)
                if any(d < 0 for d in shape):
                    mn, opt, mx = engine.get_tensor_profile_shape(name, 0)
                    self._profile[name] = tuple(tuple(int(d) for d in s) for s in (mn, opt, mx))
                else:
                    self._profile[name] = (shape, shape, shape)
            else:
                self._outputs.append(meta)
        if not self._inputs or not self._outputs:
            raise EngineError(f"{self.plan_path}: engine has {len(self._inputs)} inputs and {len(self._outputs)} outputs; rebuild it")

    def _set_input_shapes(self, batch: int) -> None:
        for meta in self._inputs:
            shape = (batch, *self._profile[meta.name][2][1:])
            if not self._context.set_input_shape(meta.name, shape):
                raise EngineError(f"{self.plan_path}: TensorRT rejected input shape {shape} for {meta.name!r} "
                                  f"(profile {self._profile[meta.name][0]}..{self._profile[meta.name][2]}): {self._logger.summary()}")

    def _allocate(self) -> None:
        from . import cuda

        self._set_input_shapes(self.max_batch)  # output shapes at the max batch size the buffers
        for meta in self._inputs + self._outputs:
            shape = (self._profile[meta.name][2] if meta.name in self._profile
                     else tuple(int(d) for d in self._context.get_tensor_shape(meta.name)))
            if any(d < 0 for d in shape):
                raise EngineError(f"{self.plan_path}: cannot size {meta.name!r} (shape {shape} after setting the inputs)")
            nbytes = int(np.prod(shape, dtype=np.int64)) * meta.dtype.itemsize
            self._device_ptrs[meta.name] = cuda.malloc(nbytes)
            self._host_ptrs[meta.name] = cuda.malloc_host(nbytes)
            self._host[meta.name] = cuda.host_array(self._host_ptrs[meta.name], (int(np.prod(shape, dtype=np.int64)),), meta.dtype)

    def deactivate_impl(self) -> None:
        self._release()

    def _release(self) -> None:
        """Free everything; safe to call twice and after a half-finished activate."""
        from . import cuda

        problems = []
        if self._stream is not None:
            try:
                cuda.set_device(self.device)  # free on the runner's GPU, whichever thread deactivates
            except Exception as err:
                problems.append(str(err))
            try:
                cuda.synchronize(self._stream)
            except Exception as err:
                problems.append(str(err))
        self._host.clear()  # views first: the memory behind them is about to go
        for ptrs, free in ((self._device_ptrs, cuda.free), (self._host_ptrs, cuda.free_host)):
            for ptr in ptrs.values():
                try:
                    free(ptr)
                except Exception as err:
                    problems.append(str(err))
            ptrs.clear()
        if self._stream is not None:
            try:
                cuda.stream_destroy(self._stream)
            except Exception as err:
                problems.append(str(err))
        # Context before engine before runtime: TensorRT objects must die in reverse order of creation.
        self._stream = None
        self._context = None
        self._engine = None
        self._runtime = None
        self._reset_keep_meta()
        if problems:
            self._warn([f"freeing CUDA resources of {self.plan_path.name}: {problems[0]}"])

    def _reset_keep_meta(self) -> None:
        sidecar, warnings = self.sidecar, self.warnings
        self._reset()
        self.sidecar, self.warnings = sidecar, warnings

    @staticmethod
    def _warn(messages) -> None:
        if messages:
            from der_deploy.progress import err_console

            for msg in messages:
                err_console.print(f"warning: {msg}", markup=False, highlight=False)

    # --- inference ----------------------------------------------------------------------------
    def _check_feed(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [m.name for m in self._inputs]
        if set(feed) != set(names):
            raise EngineError(f"{self.plan_path.name}: feed has inputs {sorted(feed)}, the engine expects {names}")
        arrays, batch = {}, None
        for meta in self._inputs:
            x = np.asarray(feed[meta.name])
            if x.dtype != meta.dtype:
                if not (x.dtype.kind == "f" and meta.dtype.kind == "f"):  # float width only, never int <-> float
                    raise EngineError(f"input {meta.name!r} has dtype {x.dtype}; the engine expects {meta.dtype}")
                x = x.astype(meta.dtype)  # e.g. float32 images into an FP16-I/O engine
            want = self._profile[meta.name][2][1:]
            if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != tuple(want):
                raise EngineError(f"input {meta.name!r} has shape {x.shape}; the engine expects (N, {', '.join(map(str, want))})")
            if batch is not None and x.shape[0] != batch:
                raise EngineError(f"inputs have different batch sizes ({batch} and {x.shape[0]})")
            batch = x.shape[0]
            arrays[meta.name] = np.ascontiguousarray(x)
        if not batch:
            raise EngineError("empty batch: give at least one image")
        return arrays

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from . import cuda

        arrays = self._check_feed(feed)
        cuda.set_device(self.device)  # the current device is per thread: the caller may be a pipeline thread
        self._logger.reset()
        n = next(iter(arrays.values())).shape[0]
        step = self.max_batch
        chunks = [self._run_chunk({k: v[s:s + step] for k, v in arrays.items()}) for s in range(0, n, step)]
        return {m.name: np.concatenate([c[m.name] for c in chunks]) if len(chunks) > 1 else chunks[0][m.name]
                for m in self._outputs}

    def _run_chunk(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from . import cuda

        n = next(iter(arrays.values())).shape[0]
        run = max(n, self.profile_min_batch)  # below the profile minimum: zero-pad, trim below
        self._set_input_shapes(run)
        for meta in self._inputs:
            x = arrays[meta.name]
            host = self._host[meta.name][: run * int(np.prod(x.shape[1:], dtype=np.int64))].reshape((run, *x.shape[1:]))
            host[:n] = x
            host[n:] = 0
        out_shapes = {}
        for meta in self._outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(meta.name))
            if any(d < 0 for d in shape) or shape[0] != run:
                raise EngineError(f"{self.plan_path.name}: unexpected output shape {shape} for {meta.name!r} at batch {run}")
            out_shapes[meta.name] = shape
        for meta in self._inputs + self._outputs:
            if not self._context.set_tensor_address(meta.name, self._device_ptrs[meta.name]):
                raise EngineError(f"TensorRT rejected the buffer address of {meta.name!r}: {self._logger.summary()}")
        for meta in self._inputs:
            nbytes = run * int(np.prod(arrays[meta.name].shape[1:], dtype=np.int64)) * meta.dtype.itemsize
            cuda.memcpy_htod_async(self._device_ptrs[meta.name], self._host_ptrs[meta.name], nbytes, self._stream)
        if not self._context.execute_async_v3(cuda.stream_handle(self._stream)):
            raise EngineError(f"{self.plan_path.name}: TensorRT inference failed ({self._logger.summary()})")
        for meta in self._outputs:
            nbytes = int(np.prod(out_shapes[meta.name], dtype=np.int64)) * meta.dtype.itemsize
            cuda.memcpy_dtoh_async(self._host_ptrs[meta.name], self._device_ptrs[meta.name], nbytes, self._stream)
        cuda.synchronize(self._stream)
        out = {}
        for meta in self._outputs:
            shape = out_shapes[meta.name]
            count = int(np.prod(shape, dtype=np.int64))
            out[meta.name] = self._host[meta.name][:count].reshape(shape)[:n].copy()
        return out

    # --- metadata -----------------------------------------------------------------------------
    def _require_active(self) -> None:
        if self._engine is None:
            raise EngineError(f"runner {self.name} is not active; call activate() or use it as a context manager")

    def _batch_range(self) -> tuple[int, int]:
        self._require_active()
        first = self._profile[self._inputs[0].name]
        return int(first[0][0]), int(first[2][0])

    @property
    def max_batch(self) -> int:
        return self._batch_range()[1]

    @property
    def min_batch(self) -> int:
        # Padding happens inside infer(), so callers may send any batch size >= 1.
        self._require_active()
        return 1

    @property
    def profile_min_batch(self) -> int:
        return self._batch_range()[0]
