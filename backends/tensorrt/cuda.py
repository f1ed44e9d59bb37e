"""Thin cuda-python (CUDA runtime API) helpers: GPU queries, device/pinned buffers, one stream, async copies.

Every cuda-python call returns a tuple ``(err, value...)``; :func:`call` checks ``err`` and unpacks the rest,
so no failed allocation or copy goes unnoticed. The module itself imports nothing from CUDA: ``load_cudart``
runs on first use, so importing ``der_deploy.backends.tensorrt.cuda`` is free on machines without a GPU.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from der_deploy.errors import BackendUnavailable, EngineError

CUDA_HINT = "install it with `pip install der-deploy[trt]` on a machine with an NVIDIA GPU"
_cudart: Any = None


def load_cudart():
    """The cuda-python runtime module: ``cuda.bindings.runtime`` (cuda-python >= 12.6) or ``cuda.cudart`` (older)."""
    global _cudart
    if _cudart is not None:
        return _cudart
    errors = []
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            module = __import__(name, fromlist=["cudaGetDeviceCount"])
        except ImportError as err:
            errors.append(f"{name}: {err}")
            continue
        except Exception as err:  # a broken install (missing libcudart) raises other types at import
            errors.append(f"{name}: {type(err).__name__}: {err}")
            continue
        _cudart = module
        return module
    raise BackendUnavailable(f"cuda-python is not installed or broken ({'; '.join(errors)}); {CUDA_HINT}")


def error_name(cudart, err) -> str:
    try:
        ok, name = cudart.cudaGetErrorName(err)
        if ok == cudart.cudaError_t.cudaSuccess:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        pass
    return str(err)


def call(result, what: str, exc: type = EngineError):
    """Check a cuda-python ``(err, *values)`` tuple; return None, the value, or the tuple of values."""
    cudart = load_cudart()
    if not isinstance(result, tuple) or not result:
        raise exc(f"CUDA call {what} returned {result!r} instead of (error, value...); check the cuda-python version")
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        raise exc(f"CUDA call {what} failed: {error_name(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# --- GPU queries -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str  # "major.minor", e.g. "8.6"
    total_memory: int  # bytes

    @property
    def sm(self) -> str:
        return "sm_" + self.compute_capability.replace(".", "")


CU12_HINT = "pip install der-deploy[trt-cu12]"


def _driver_call(fn):
    """``fn()``, or ``(RuntimeError, None)`` where old cuda-python raises instead of returning an error code:
    12.6.0-12.8.x raise RuntimeError("Failed to dlopen libcuda.so.1") when no NVIDIA driver is installed."""
    try:
        return fn()
    except RuntimeError as err:
        return err, None


def _version_number(fn) -> int:
    """cudaDriverGetVersion / cudaRuntimeGetVersion as 12040-style int; 0 when unknown or no driver."""
    cudart = load_cudart()
    result = _driver_call(fn)
    if isinstance(result, tuple) and len(result) > 1 and result[0] == cudart.cudaError_t.cudaSuccess:
        return int(result[1] or 0)
    return 0


def _dotted(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _device_count() -> tuple[int, str]:
    """(number of visible GPUs, why none as a clause that starts a sentence: "" when there are some)."""
    cudart = load_cudart()
    result = _driver_call(cudart.cudaGetDeviceCount)
    err, value = result[0], (result[1] if len(result) > 1 else None)
    if isinstance(err, RuntimeError):
        return 0, f"no NVIDIA driver is installed ({err}); run on a machine with an NVIDIA GPU and its driver"
    if err == cudart.cudaError_t.cudaSuccess and value:  # on failure the value is None, not 0
        return int(value), ""
    if err == cudart.cudaError_t.cudaSuccess:
        return 0, "no CUDA GPU is visible (no CUDA device found); run on a machine with an NVIDIA GPU and driver"
    name = error_name(cudart, err)
    if name == "cudaErrorInsufficientDriver":
        driver, runtime = _version_number(cudart.cudaDriverGetVersion), _version_number(cudart.cudaRuntimeGetVersion)
        if driver == 0:  # cudaDriverGetVersion reports 0 when libcuda cannot be loaded at all
            return 0, f"no NVIDIA driver is installed ({name}); run on a machine with an NVIDIA GPU and its driver"
        need = f"CUDA {_dotted(runtime)}" if runtime else "this cuda-python's CUDA"
        fix = ("upgrade the NVIDIA driver, or install the CUDA 12 builds of TensorRT and cuda-python: " + CU12_HINT
               if runtime >= 13000 and driver >= 12000 else "upgrade the NVIDIA driver")
        return 0, f"the NVIDIA driver is too old for {need}: it supports CUDA {_dotted(driver)} ({name}); {fix}"
    return 0, f"no CUDA GPU is visible ({name}); run on a machine with an NVIDIA GPU and driver"


def gpu_count() -> int:
    """Number of visible CUDA GPUs. No driver / no device -> 0; cuda-python missing -> BackendUnavailable."""
    return _device_count()[0]


def no_gpu_message() -> str:
    """Why :func:`gpu_count` is 0, as one clause with the fix (driver missing, driver too old, no device)."""
    return _device_count()[1] or "CUDA GPUs are visible"


def no_gpu_reason() -> str:
    """Why :func:`gpu_count` is 0, in CUDA's own words (e.g. cudaErrorNoDevice, cudaErrorInsufficientDriver)."""
    cudart = load_cudart()
    err = _driver_call(cudart.cudaGetDeviceCount)[0]
    if isinstance(err, RuntimeError):
        return str(err)
    return "no CUDA device found" if err == cudart.cudaError_t.cudaSuccess else error_name(cudart, err)


def gpu_info(device: int = 0) -> GpuInfo:
    cudart = load_cudart()
    count, why = _device_count()
    if count == 0:
        raise BackendUnavailable(why)
    if not 0 <= device < count:
        raise BackendUnavailable(f"CUDA device {device} does not exist; this machine has {count} GPU(s) (0..{count - 1})")
    prop = call(cudart.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})", BackendUnavailable)
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\x00", 1)[0].decode("utf-8", "replace")
    return GpuInfo(device, str(name).strip(), f"{int(prop.major)}.{int(prop.minor)}", int(prop.totalGlobalMem))


def list_gpus() -> list[GpuInfo]:
    return [gpu_info(i) for i in range(gpu_count())]


def set_device(device: int) -> None:
    cudart = load_cudart()
    call(cudart.cudaSetDevice(device), f"cudaSetDevice({device})")


# --- memory, stream, copies -------------------------------------------------------------------------
def malloc(nbytes: int) -> int:
    cudart = load_cudart()
    return int(call(cudart.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})"))


def free(ptr: int) -> None:
    cudart = load_cudart()
    call(cudart.cudaFree(ptr), "cudaFree")


def malloc_host(nbytes: int) -> int:
    """Page-locked host memory: required for truly asynchronous copies."""
    cudart = load_cudart()
    return int(call(cudart.cudaMallocHost(max(int(nbytes), 1)), f"cudaMallocHost({nbytes})"))


def free_host(ptr: int) -> None:
    cudart = load_cudart()
    call(cudart.cudaFreeHost(ptr), "cudaFreeHost")


def host_array(ptr: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A numpy view of ``prod(shape)`` elements of host memory at ``ptr`` (no copy; the caller owns ``ptr``)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = (ctypes.c_char * max(count * dtype.itemsize, 1)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


def stream_create():
    cudart = load_cudart()
    return call(cudart.cudaStreamCreate(), "cudaStreamCreate")


def stream_destroy(stream) -> None:
    cudart = load_cudart()
    call(cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")


def stream_handle(stream) -> int:
    """The raw ``cudaStream_t`` address TensorRT's ``execute_async_v3`` wants."""
    return int(stream)


def memcpy_htod_async(dst: int, src: int, nbytes: int, stream) -> None:
    cudart = load_cudart()
    kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    call(cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream), "cudaMemcpyAsync(host->device)")


def memcpy_dtoh_async(dst: int, src: int, nbytes: int, stream) -> None:
    cudart = load_cudart()
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    call(cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream), "cudaMemcpyAsync(device->host)")


def synchronize(stream) -> None:
    cudart = load_cudart()
    call(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


def versions() -> dict[str, str]:
    """CUDA driver and runtime versions as "12.4"-style strings (for der-doctor); no driver -> no "driver" key."""
    cudart = load_cudart()
    out = {}
    for key, fn in (("driver", cudart.cudaDriverGetVersion), ("runtime", cudart.cudaRuntimeGetVersion)):
        v = _version_number(fn)
        if v:
            out[key] = _dotted(v)
    return out
