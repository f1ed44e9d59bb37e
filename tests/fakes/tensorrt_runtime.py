"""The runtime half of the fake ``tensorrt`` (Runtime, ICudaEngine, IExecutionContext) and what both halves
share (enums, ILogger, nptype, the CUDA start-up check, the fake plan format). See fakes/tensorrt.py.

A fake plan is ``b"FAKEPLAN"`` + JSON: one input ``images`` (N, C, H, W), outputs (N, classes), the batch
range of profile 0 and switches for failures. The engine really computes: it reads the input bytes from the
device address it was given and writes :func:`reference` into the output buffers (every output is
(N, classes); names other than logits/scores get the logits).
"""
from __future__ import annotations

import ctypes
import enum
import json

import numpy as np

NULLPTR = "pybind11::init(): factory function returned nullptr"
CUDA_ERROR_35 = ("CUDA initialization failure with error: 35. Please check your CUDA installation: "
                 "http://docs.nvidia.com/cuda/cuda-installation-guide-linux/index.html")
PLAN_MAGIC = b"FAKEPLAN"
INPUT = "images"


class PybindEnum(enum.Enum):
    """pybind11 enums: ``int()`` and ``.name`` work, but a member is not an int (``DataType.FLOAT == 0`` is False)."""

    def __int__(self):
        return self.value

    __index__ = __int__


class PybindClass(type):
    """pybind11's metaclass: a Python subclass whose __init__ skips the base __init__ cannot be instantiated."""

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        if not getattr(obj, "_pybind_initialised", False):
            raise TypeError(f"{cls.__name__}.__init__() must be called when overriding __init__")
        return obj


class HostMemory(bytes):
    """trt.IHostMemory: a buffer (``memoryview``/``bytes`` work) with ``nbytes``."""

    @property
    def nbytes(self) -> int:
        return len(self)


def plan_bytes(*, lo: int, opt: int, hi: int, chw=(3, 4, 4), classes: int = 3, outputs=("logits", "scores"),
               **switches) -> bytes:
    """A plan the fake Runtime deserializes. ``switches``: fp16_io, bf16_io, reject_shapes, fail_execute."""
    spec = dict(min=lo, opt=opt, max=hi, chw=[int(d) for d in chw], classes=int(classes), outputs=list(outputs),
                **switches)
    return PLAN_MAGIC + json.dumps(spec).encode()


def reference(x: np.ndarray, classes: int = 3) -> dict[str, np.ndarray]:
    """What a fake engine computes: class k is the mean of channel k % C, scaled by k + 1."""
    means = x.mean(axis=(2, 3))
    logits = np.stack([means[:, k % means.shape[1]] * (k + 1) for k in range(classes)], axis=1)
    return {"logits": logits, "scores": 1.0 / (1.0 + np.exp(-logits))}


def install_core(trt, major: int) -> None:
    """Enums, ILogger and nptype with TensorRT's own numbering (10 vs 11 where they differ)."""

    class ILogger(metaclass=PybindClass):
        Severity = PybindEnum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4})

        def __init__(self):
            self._pybind_initialised = True

    trt.ILogger = ILogger
    trt.DataType = PybindEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5,
                                           "FP8": 6, "BF16": 7, "INT64": 8})
    trt.TensorIOMode = PybindEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    # TensorRT 10 numbers STRONGLY_TYPED 1 (0 is the deprecated EXPLICIT_BATCH, left out so touching it fails);
    # TensorRT 11 renumbers it 0, deprecated and ignored.
    trt.NetworkDefinitionCreationFlag = PybindEnum("NetworkDefinitionCreationFlag",
                                                   {"STRONGLY_TYPED": 0 if major >= 11 else 1})
    # TensorRT 11 removed every precision flag (FP16, INT8, BF16, FP8...); TF32 kept its number.
    trt.BuilderFlag = PybindEnum("BuilderFlag", {"TF32": 6} if major >= 11 else {"FP16": 0, "INT8": 1, "TF32": 6})
    trt.MemoryPoolType = PybindEnum("MemoryPoolType", {"WORKSPACE": 0})
    numpy_of = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
                "UINT8": np.uint8, "INT64": np.int64}

    def nptype(trt_type):
        if trt_type.name not in numpy_of:  # BF16, FP8: numpy has no such type
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return numpy_of[trt_type.name]

    trt.nptype = nptype


def init_cuda(trt, logger) -> None:
    """What Builder() and Runtime() do first: a driver older than the wheel's CUDA is CUDA error 35, logged as a
    warning, and the pybind11 factory constructor then raises TypeError (it never returns None)."""
    if not isinstance(logger, trt.ILogger):
        raise TypeError("__init__(): incompatible constructor arguments; logger must be a tensorrt.ILogger")
    cudart = trt.fake.cudart
    if cudart is not None and cudart.driver != "dlopen" and int(cudart.driver or 0) < trt.fake.cuda_major * 1000:
        logger.log(trt.ILogger.Severity.WARNING, CUDA_ERROR_35)
        raise TypeError(NULLPTR)


def install_runtime(trt) -> None:
    error = lambda logger, msg: logger.log(trt.ILogger.Severity.ERROR, msg)  # noqa: E731

    class IExecutionContext:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}
            self.executed: list[int] = []  # batch size of every successful execute_async_v3

        def set_input_shape(self, name, shape):
            shape = tuple(int(d) for d in shape)
            trt.calls.append(("set_input_shape", name, shape))
            s = self.engine.spec
            fits = name == INPUT and list(shape[1:]) == s["chw"] and s["min"] <= shape[0] <= s["max"]
            if s.get("reject_shapes") or not fits:  # TensorRT logs and returns False, no exception
                error(self.engine.logger, f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Set "
                      f"dimension {list(shape)} for tensor {name} does not satisfy any optimization profiles. Valid "
                      f"range for profile 0: {[s['min'], *s['chw']]}..{[s['max'], *s['chw']]}.)")
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            n = self.shapes.get(INPUT, (-1,))[0]  # -1 until the input shape is set, like TensorRT
            return self.shapes.get(INPUT, (-1, *self.engine.spec["chw"])) if name == INPUT else (n, self.engine.classes)

        def set_tensor_address(self, name, memory):
            if name not in self.engine.names:
                error(self.engine.logger, f"IExecutionContext::setTensorAddress: Error Code 3: no tensor named {name}")
                return False
            self.addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle):
            if not isinstance(stream_handle, int):  # pybind11 signature: (self, stream_handle: int) -> bool
                raise TypeError("execute_async_v3(): incompatible function arguments; stream_handle must be an int")
            trt.calls.append(("execute_async_v3", stream_handle))
            problem = self._launch_problem(stream_handle)
            if problem is not None:  # enqueueV3 reports through the logger and returns False
                error(self.engine.logger, f"IExecutionContext::enqueueV3: {problem}")
                return False
            engine, sizes = self.engine, self._nbytes()
            n, (c, h, w) = self.shapes[INPUT][0], engine.spec["chw"]
            raw = (ctypes.c_char * sizes[INPUT]).from_address(self.addresses[INPUT])
            outs = reference(np.frombuffer(raw, engine.dtype).reshape(n, c, h, w).astype(np.float64), engine.classes)
            for name in engine.outputs:
                raw = (ctypes.c_char * sizes[name]).from_address(self.addresses[name])
                np.frombuffer(raw, engine.dtype)[:] = outs.get(name, outs["logits"]).ravel().astype(engine.dtype)
            self.executed.append(n)
            return True

        def _nbytes(self) -> dict[str, int]:
            engine, n = self.engine, self.shapes[INPUT][0]
            per_sample = {INPUT: int(np.prod(engine.spec["chw"])), **{o: engine.classes for o in engine.outputs}}
            return {name: n * size * engine.dtype.itemsize for name, size in per_sample.items()}

        def _launch_problem(self, stream_handle) -> str | None:
            engine, cudart = self.engine, trt.fake.cudart
            assert cudart is not None, "running a fake engine needs fake_tensorrt(cudart=...)"
            if engine.spec.get("fail_execute"):
                return "an illegal memory access was encountered"
            missing = [n for n in engine.names if n not in self.addresses] + ([] if INPUT in self.shapes else [INPUT])
            if missing:
                return f"Error Code 3: API Usage Error (the address or shape of tensor {missing[0]} is not set)"
            problem = cudart.launch_error(stream_handle)  # kernels fail on another device's stream
            if problem is None and cudart.current() != engine.device:
                problem = f"engine of device {engine.device} enqueued while device {cudart.current()} is current"
            for name, nbytes in self._nbytes().items():  # a host or too small pointer would crash the real GPU
                if problem is None and not cudart.is_device_buffer(self.addresses[name], nbytes):
                    problem = f"an illegal memory access was encountered ({name}: not {nbytes} bytes of device memory)"
            return problem

    class ICudaEngine:
        def __init__(self, spec, logger):
            self.spec, self.logger = spec, logger
            self.outputs, self.classes = list(spec["outputs"]), int(spec["classes"])
            self.names = [INPUT, *self.outputs]
            self.dtype = np.dtype(np.float16 if spec.get("fp16_io") else np.float32)
            self.contexts: list[IExecutionContext] = []
            cudart = trt.fake.cudart
            self.device = cudart.current() if cudart is not None else 0  # an engine lives on the GPU current at load

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            io = trt.TensorIOMode
            return io.INPUT if name == INPUT else io.OUTPUT if name in self.names else io.NONE

        def get_tensor_dtype(self, name):
            if self.spec.get("bf16_io"):
                return trt.DataType.BF16
            return trt.DataType.HALF if self.dtype == np.float16 else trt.DataType.FLOAT

        def get_tensor_shape(self, name):
            return (-1, *self.spec["chw"]) if name == INPUT else (-1, self.classes)

        def get_tensor_profile_shape(self, name, profile_index):
            assert name == INPUT and profile_index == 0, "fake engines have one input and one profile"
            return [(self.spec[b], *self.spec["chw"]) for b in ("min", "opt", "max")]

        def create_execution_context(self):
            ctx = IExecutionContext(self)
            self.contexts.append(ctx)
            return ctx

    class Runtime:
        def __init__(self, logger):
            init_cuda(trt, logger)
            trt.calls.append(("Runtime",))
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            trt.calls.append(("deserialize_cuda_engine", len(data)))
            if not data.startswith(PLAN_MAGIC):
                error(self.logger, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                      "assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
                return None
            engine = ICudaEngine(json.loads(data[len(PLAN_MAGIC):]), self.logger)
            trt.engines.append(engine)
            return engine

    trt.Runtime, trt.ICudaEngine, trt.IExecutionContext = Runtime, ICudaEngine, IExecutionContext
