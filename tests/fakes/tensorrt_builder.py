"""The builder half of the fake ``tensorrt`` (Builder, OnnxParser, INetworkDefinition, IBuilderConfig,
IOptimizationProfile, ITimingCache). See fakes/tensorrt.py.

The parser reads the ONNX's inputs and outputs; a successful build returns a fake plan (fakes/tensorrt_runtime.py)
for that network and profile, so what the fake builds, the fake Runtime loads and runs.
"""
from __future__ import annotations

import types

from .tensorrt_runtime import INPUT, NULLPTR, HostMemory, init_cuda, plan_bytes

CACHE_TAG = b"CACHE-OK"  # timing caches this fake wrote; anything else is "another TensorRT version or GPU"


def _dims(value_info) -> tuple[int, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                 for d in value_info.type.tensor_type.shape.dim)


def _profile_problem(network, shapes) -> str | None:
    """What the build refuses: an input without profile dimensions, or a profile that contradicts fixed dims."""
    dims = {t.name: t.shape for t in network.inputs}.get(INPUT)
    if shapes is None or dims is None:
        return f"Error Code 4: API Usage Error ({INPUT}: dynamic input is missing dimensions in profile 0.)"
    if any(len(s) != len(dims) or any(0 <= d != v for d, v in zip(dims, s)) for s in shapes):
        return f"Error Code 4: API Usage Error ({INPUT}: profile dimensions {list(shapes)} contradict {list(dims)}.)"
    return None


def install_builder(trt) -> None:
    fake = trt.fake
    error = lambda logger, msg: logger.log(trt.ILogger.Severity.ERROR, msg)  # noqa: E731

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags, self.inputs, self.outputs = flags, [], []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, index):
            return self.inputs[index]

        def get_output(self, index):
            return self.outputs[index]

    class IParserError:
        def __init__(self, index):
            self.index = index

        def desc(self):
            return f"unsupported operator number {self.index}"

        def node(self):
            return 10 + self.index

        def code(self):
            return "ErrorCode.UNSUPPORTED_NODE"

        def node_name(self):
            return f"/backbone/op{self.index}"

        def node_operator(self):
            return "FancyOp"

    class OnnxParser:
        def __init__(self, network, logger):
            if fake.parser_nullptr:  # e.g. nvonnxparser from another TensorRT: pybind11 raises, never None
                error(logger, "Could not create the ONNX parser (nvonnxparser version mismatch)")
                raise TypeError(NULLPTR)
            self.network, self.num_errors = network, 0

        def parse_from_file(self, model):
            import onnx

            trt.calls.append(("parse_from_file", model))
            if fake.parse_errors:
                self.num_errors = fake.parse_errors
                return False
            graph = onnx.load(model, load_external_data=False).graph
            weights = {t.name for t in graph.initializer}
            for values, into in ((graph.input, self.network.inputs), (graph.output, self.network.outputs)):
                into += [types.SimpleNamespace(name=v.name, shape=_dims(v)) for v in values if v.name not in weights]
            return True

        def get_error(self, index):
            return IParserError(index)

    class IOptimizationProfile:
        def __init__(self):
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 (the binding's keyword names)
            shapes = tuple(tuple(int(d) for d in s) for s in (min, opt, max))
            trt.calls.append(("set_shape", input, *shapes))
            lo, mid, hi = shapes
            ordered = all(a <= b <= c for a, b, c in zip(lo, mid, hi))
            for label, shape in zip(("min", "opt", "max"), shapes):
                if len(shape) != len(lo) or not ordered:  # the binding raises here; it never returns False
                    raise RuntimeError(f"Shape provided for {label} is inconsistent with other shapes.")
            self.shapes[input] = shapes

    class ITimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return HostMemory(CACHE_TAG + b":" + str(len(self.data)).encode())

    class IBuilderConfig:
        def __init__(self):
            self.flags = {"TF32"}  # TensorRT enables TF32 by default
            self.profiles: list[IOptimizationProfile] = []

        def set_flag(self, flag):
            trt.calls.append(("set_flag", flag.name))
            self.flags.add(flag.name)

        def clear_flag(self, flag):
            trt.calls.append(("clear_flag", flag.name))
            self.flags.discard(flag.name)

        def set_memory_pool_limit(self, pool, pool_size):
            trt.calls.append(("set_memory_pool_limit", pool.name, pool_size))

        def add_optimization_profile(self, profile):
            trt.calls.append(("add_optimization_profile",))
            if not profile.shapes:  # an invalid profile is refused with -1
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            trt.calls.append(("create_timing_cache", bytes(serialized_timing_cache)))
            return ITimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch):
            trt.calls.append(("set_timing_cache", cache.data, ignore_mismatch))
            return cache.data == b"" or cache.data.startswith(CACHE_TAG)  # False: made elsewhere

        def get_timing_cache(self):
            return ITimingCache(b"updated")

    class Builder:
        def __init__(self, logger):
            init_cuda(trt, logger)
            self.logger = logger

        def create_network(self, flags=0):
            trt.calls.append(("create_network", flags))
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            trt.calls.append(("build_serialized_network",))
            shapes = config.profiles[0].shapes.get(INPUT) if config.profiles else None
            problem = ("Error Code 4: Internal Error (no implementation for node X)" if fake.build_fails
                       else _profile_problem(network, shapes))
            if problem is not None:  # the build logs and returns None
                error(self.logger, problem)
                return None
            classes = network.outputs[0].shape[-1] if network.outputs else 3
            return HostMemory(plan_bytes(lo=shapes[0][0], opt=shapes[1][0], hi=shapes[2][0], chw=shapes[2][1:],
                                         classes=classes, outputs=[t.name for t in network.outputs]))

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
