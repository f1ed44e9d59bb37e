"""One fake ``tensorrt`` module, builder and runtime side, made per test by :func:`fake_tensorrt` and handed to
der-deploy through its loader argument (``TrtRunner(plan, tensorrt=trt)``, ``build_engine(..., tensorrt=trt)``),
never through sys.modules.

Checked against NVIDIA's TensorRT 10.x / 11.x Python API reference and the pybind11 bindings:
- ``Builder``, ``Runtime`` and ``OnnxParser`` are pybind11 factory constructors: when TensorRT hands back nullptr
  they raise ``TypeError("pybind11::init(): factory function returned nullptr")``, never return None. Builder
  and Runtime first initialise CUDA; a driver older than the wheel's CUDA (cu12 / cu13) makes TensorRT log
  "CUDA initialization failure with error: 35" as a WARNING before that TypeError;
- a Python subclass of ``ILogger`` must call ``ILogger.__init__`` (pybind11 raises TypeError otherwise), and
  Builder / Runtime take only an ILogger;
- enums are pybind11 enums (``int()`` and ``.name`` work; a member is not an int) with TensorRT's numbers:
  DataType FLOAT 0 .. BF16 7, INT64 8; ILogger.Severity INTERNAL_ERROR 0 .. VERBOSE 4; BuilderFlag TF32 6;
  NetworkDefinitionCreationFlag.STRONGLY_TYPED is 1 in TensorRT 10 and 0 in 11 (deprecated and ignored there),
  and TensorRT 11 has no precision builder flags (FP16, INT8...) at all;
- ``nptype`` raises TypeError for types numpy lacks (BF16, FP8);
- failures are logged and answered with False / None (set_input_shape, set_tensor_address, execute_async_v3,
  deserialize_cuda_engine, build_serialized_network; add_optimization_profile answers -1), except
  ``IOptimizationProfile.set_shape``, which raises RuntimeError on inconsistent shapes;
- ``execute_async_v3`` takes the stream as an int; kernels fail on another GPU's stream or engine.
Deliberately absent, so touching them fails: EXPLICIT_BATCH, ``Builder.build_engine``, ``max_workspace_size``
and the binding-index API (``get_binding_*``, ``execute_async_v2``), all deprecated or gone in TensorRT 10.

"Device" memory is the fake cuda-python's (fakes/cuda.py): real bytes. Calls are recorded in ``trt.calls`` as
``(name, args...)``; ``trt.engines`` holds every deserialized engine (``.contexts``, each with ``.executed``).
"""
from __future__ import annotations

import hashlib
import shutil
import types
from pathlib import Path

from .tensorrt_builder import install_builder
from .tensorrt_runtime import NULLPTR, PLAN_MAGIC, install_core, install_runtime, plan_bytes, reference  # noqa: F401

TRT_VERSION = "10.9.0.34"


def fake_tensorrt(version: str = TRT_VERSION, *, cudart=None, cuda_major: int = 13, parse_errors: int = 0,
                  build_fails: bool = False, parser_nullptr: bool = False) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module.

    ``cudart``: the fake CUDA runtime (fakes.cuda.FakeCudart) it runs on -- needed to run engines;
    ``cuda_major``: the CUDA its wheel was built for (Builder/Runtime fail with error 35 on an older driver);
    ``parse_errors``: how many errors parse_from_file reports; ``build_fails``: build_serialized_network
    returns None; ``parser_nullptr``: OnnxParser cannot be created. Options live on ``trt.fake`` and may change.
    """
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.fake = types.SimpleNamespace(cudart=cudart, cuda_major=cuda_major, parse_errors=parse_errors,
                                     build_fails=build_fails, parser_nullptr=parser_nullptr)
    trt.calls, trt.engines = [], []
    install_core(trt, int(version.split(".")[0]))
    install_runtime(trt)
    install_builder(trt)
    return trt


def calls(trt, name: str) -> list[tuple]:
    """The recorded calls of one API, in order."""
    return [c for c in trt.calls if c[0] == name]


def make_fake_plan(folder: Path, card, *, lo: int = 1, opt: int = 4, hi: int = 8, onnx: Path | None = None,
                   onnx_name: str = "", tensorrt_version: str = TRT_VERSION, gpu_name: str = "Fake GPU A",
                   compute_capability: str = "8.6", **switches) -> Path:
    """``folder/der.plan`` that the fake Runtime loads, with a valid sidecar (what the repository writer reads).

    With ``onnx`` (copied beside the plan as der.fp16.onnx and named in the sidecar, hash checked) the I/O come
    from that ONNX. ``switches`` go into the plan: fp16_io, bf16_io, reject_shapes, fail_execute.
    """
    from der_deploy.artifact.sidecar import Sidecar, write_sidecar
    from der_deploy.fileio import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / "der.plan"
    h, w = card.input_size
    data = plan_bytes(lo=lo, opt=opt, hi=hi, chw=(3, h, w), classes=card.num_classes, **switches)
    plan.write_bytes(data)
    onnx_sha = "0" * 64
    if onnx is not None:
        shutil.copyfile(onnx, folder / "der.fp16.onnx")
        onnx_name, onnx_sha = "der.fp16.onnx", sha256_file(folder / "der.fp16.onnx")
    write_sidecar(plan, Sidecar(
        card=card, onnx_sha256=onnx_sha, tensorrt_version=tensorrt_version, gpu_name=gpu_name,
        compute_capability=compute_capability, precision="fp16",
        profiles=[{"input": "images", "min": [lo, 3, h, w], "opt": [opt, 3, h, w], "max": [hi, 3, h, w]}],
        build_seconds=1.0, built_at="2026-01-01T00:00:00+00:00", der_deploy_version="0.1.0",
        plan_sha256=hashlib.sha256(data).hexdigest(), onnx_name=onnx_name))
    return plan
