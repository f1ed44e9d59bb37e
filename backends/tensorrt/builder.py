"""Build a plain TensorRT plan (``der.plan``) from an exported ONNX, plus its ``der.plan.json`` sidecar.

Works with TensorRT 10 and 11 through the documented Python API only: ``build_serialized_network``,
``set_memory_pool_limit``, optimization profiles, timing caches, ``OnnxParser.parse_from_file``.

Precision decision table (``choose_network``). TensorRT 11 removed the precision builder flags: every
network is strongly typed, so the ONNX itself must carry the precision. TensorRT 10 still has
``BuilderFlag.FP16`` (weak typing) and also ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``.

    precision  ONNX contents           TensorRT 10                     TensorRT 11
    fp32       FP32 only               strongly typed, TF32 cleared    strongly typed, TF32 cleared
    fp16       FP16 / mixed (Casts)    strongly typed                  strongly typed
    fp16       FP32 only               weakly typed + BuilderFlag.FP16 ExportError: pass the FP16 ONNX
    int8       S8S8 Q/DQ               strongly typed (explicit quant) strongly typed (explicit quant)

Any other combination (FP16 ONNX for fp32, Q/DQ ONNX without int8, U8S8 or asymmetric Q/DQ, int8 without
Q/DQ) is an ExportError: we never change the precision behind the user's back. TF32 is cleared for fp32
because TensorRT enables it by default and it would break the FP32 parity budget.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from der_deploy.errors import BackendUnavailable, CardError, ExportError
from der_deploy.backends.tensorrt.runner import TRT_MISSING, load_tensorrt  # noqa: F401 (TRT_MISSING re-exported)

PRECISIONS = ("fp32", "fp16", "int8")
INPUT_NAME = "images"
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def tensorrt_available(tensorrt=None):
    """The ``tensorrt`` module, or BackendUnavailable saying why not (not installed / no GPU).

    ``tensorrt``: a module or a zero-argument loader to use instead of importing the installed TensorRT.
    """
    trt = load_tensorrt(tensorrt)
    from der_deploy.backends.tensorrt import cuda

    if cuda.gpu_count() == 0:
        raise BackendUnavailable(f"TensorRT {getattr(trt, '__version__', '?')} is installed but {cuda.no_gpu_message()}")
    return trt


def trt_major(trt) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        raise BackendUnavailable(f"cannot read the TensorRT version ({getattr(trt, '__version__', None)!r}); reinstall TensorRT") from None


# --- ONNX inspection (no TensorRT needed) -------------------------------------------------------------
@dataclass
class OnnxInfo:
    path: Path
    fp16: bool = False  # any FP16 tensor: initializer, I/O, Cast target, Constant
    qdq: bool = False  # QuantizeLinear / DequantizeLinear present
    unsigned_qdq: bool = False  # a uint8 zero point (ONNX Runtime's U8S8 flavour)
    asymmetric_qdq: bool = False  # a non-zero int8 zero point
    inputs: dict[str, list[int]] = field(default_factory=dict)  # -1 for dynamic dims
    card: Any = None


def inspect_onnx(onnx_path: str | Path) -> OnnxInfo:
    """Precision, quantization flavour, input shapes and model card of an ONNX (weights are not loaded)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from der_deploy.artifact.card import ONNX_METADATA_KEY, ModelCard

    path = Path(onnx_path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file; export one with der-export")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ExportError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0] if str(err) else type(err).__name__}); re-export it with der-export") from None
    g = model.graph
    info = OnnxInfo(path)
    f16 = TensorProto.FLOAT16
    inits = {t.name: t for t in g.initializer}
    tensors = list(g.initializer) + [a.t for n in g.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    values = list(g.input) + list(g.output) + list(g.value_info)
    info.fp16 = (any(t.data_type == f16 for t in tensors)
                 or any(v.type.tensor_type.elem_type == f16 for v in values)
                 or any(a.name == "to" and a.i == f16 for n in g.node if n.op_type == "Cast" for a in n.attribute))
    for node in g.node:
        if node.op_type not in _QDQ_OPS:
            continue
        info.qdq = True
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is None:
            continue
        if zp.data_type == TensorProto.UINT8:
            info.unsigned_qdq = True
        elif zp.data_type == TensorProto.INT8 and numpy_helper.to_array(zp).any():
            info.asymmetric_qdq = True
    for v in g.input:
        if v.name in inits:
            continue
        dims = v.type.tensor_type.shape.dim
        info.inputs[v.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims]
    meta = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY in meta:
        try:
            info.card = ModelCard.from_json(meta[ONNX_METADATA_KEY])
        except CardError as err:
            raise ExportError(f"{path}: bad model card in the ONNX metadata ({err}); re-export it with der-export") from None
    return info


@dataclass(frozen=True)
class NetworkPlan:
    strongly_typed: bool
    set_flags: tuple[str, ...] = ()
    clear_flags: tuple[str, ...] = ()


def choose_network(major: int, precision: str, info: OnnxInfo) -> NetworkPlan:
    """The module docstring's decision table; ExportError for every combination that would change precision."""
    name = info.path.name
    if precision not in PRECISIONS:
        raise ExportError(f"unknown TensorRT precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if info.qdq and precision != "int8":
        raise ExportError(f"{name} is quantized (Q/DQ nodes); build it with --int8, or pass the FP32/FP16 ONNX for {precision}")
    if precision == "int8":
        if not info.qdq:
            raise ExportError(f"{name} has no Q/DQ nodes; TensorRT INT8 needs the S8S8 Q/DQ ONNX: der-export model.pt --trt --int8 --calib DIR")
        if info.unsigned_qdq:
            raise ExportError(f"{name} is the U8S8 ONNX (uint8 activations, for ONNX Runtime on CPU); TensorRT needs the "
                              "symmetric S8S8 Q/DQ ONNX: der-export model.pt --trt --int8 --calib DIR")
        if info.asymmetric_qdq:
            raise ExportError(f"{name} has non-zero int8 zero points; TensorRT supports symmetric quantization only: "
                              "re-quantize with der-export --trt --int8 (S8S8)")
        return NetworkPlan(strongly_typed=True)
    if precision == "fp32":
        if info.fp16:
            raise ExportError(f"{name} contains FP16 tensors; for an fp32 engine pass the FP32 ONNX")
        return NetworkPlan(strongly_typed=True, clear_flags=("TF32",))
    if info.fp16:
        return NetworkPlan(strongly_typed=True)
    if major >= 11:
        raise ExportError(f"{name} is FP32, and TensorRT {major} builds FP16 engines only from an FP16 ONNX (networks are "
                          "always strongly typed); pass the FP16 ONNX that der-export writes (model.fp16.onnx)")
    return NetworkPlan(strongly_typed=False, set_flags=("FP16",))


def profile_shapes(name: str, dims: Sequence[int], profile, input_size: tuple[int, int] | None = None):
    """(min, opt, max) shapes for one network input from a BatchProfile; ExportError when they cannot fit."""
    dims = [int(d) for d in dims]
    if not dims:
        raise ExportError(f"input {name!r} is a scalar; expected (N, 3, H, W) -- re-export with der-export")
    batch = dims[0]
    if batch > 0 and (profile.min, profile.max) != (batch, batch):
        raise ExportError(f"input {name!r} has a fixed batch of {batch}, so --batch {profile} cannot apply; "
                          f"use --batch {batch} or re-export the ONNX with a dynamic batch")
    rest = dims[1:]
    if name == INPUT_NAME and len(dims) == 4 and input_size is not None:
        for i, (have, want) in enumerate(zip(rest[1:], input_size)):
            if have > 0 and have != want:
                raise ExportError(f"input {name!r} is {dims[2]}x{dims[3]} in the ONNX but the model card says "
                                  f"{input_size[0]}x{input_size[1]}; re-export the ONNX with der-export")
        rest = [rest[0] if rest[0] > 0 else 3, *input_size]
    if any(d <= 0 for d in rest):
        raise ExportError(f"input {name!r} has dynamic dimensions {dims} besides the batch; re-export with a fixed image size")
    return tuple((b, *rest) for b in profile.as_tuple())


# --- TensorRT build ---------------------------------------------------------------------------------
def _parser_errors(parser) -> str:
    items = []
    for i in range(int(parser.num_errors)):
        e = parser.get_error(i)
        parts = [str(e.desc()).replace("\n", " ").strip()]
        where = [f"node {e.node()}"]
        for attr, label in (("node_name", ""), ("node_operator", "op ")):
            fn = getattr(e, attr, None)
            value = fn() if callable(fn) else None
            if value:
                where.append(f"{label}{value}")
        where.append(f"code {e.code()}")
        items.append(f"[{i + 1}] {parts[0]} ({', '.join(where)})")
    return "; ".join(items) or "no parser error was reported"


def _try_timing_cache(config, data: bytes) -> bool:
    try:  # TensorRT may return None, False, or raise on a foreign / corrupt cache blob
        cache = config.create_timing_cache(data)
        return cache is not None and bool(config.set_timing_cache(cache, ignore_mismatch=False))
    except Exception:
        return False


def _load_timing_cache(config, path: Path | None, warn) -> None:
    if path is None:
        return
    data = path.read_bytes() if path.is_file() else b""
    if _try_timing_cache(config, data):
        return
    if data:
        warn(f"timing cache {path} was made by another TensorRT version or GPU (or is corrupt); starting a fresh one")
        if _try_timing_cache(config, b""):
            return
    raise ExportError(f"TensorRT could not create a timing cache for {path}; build without --timing-cache")


def _spinner(text: str):
    from der_deploy.progress import err_console, progress_enabled

    return err_console.status(text) if progress_enabled() else contextlib.nullcontext()


def build_engine(onnx_path: str | Path, plan_path: str | Path, *, precision: str = "fp16", profile,
                 workspace: float | None = None, timing_cache: str | Path | None = None, card=None,
                 device: int = 0, tensorrt=None) -> Path:
    """Build ``plan_path`` (plain TensorRT plan) and ``<plan_path>.json`` from ``onnx_path``; returns the plan path.

    ``profile``: a BatchProfile (or "MAX" / "MIN:MAX" / "MIN:OPT:MAX"); ``workspace`` in GiB; ``timing_cache``
    a file reused and updated across builds; ``card`` overrides the card stored in the ONNX metadata;
    ``tensorrt`` a module or zero-argument loader (None: the installed TensorRT), loaded after the checks.
    """
    from der_deploy import __version__
    from der_deploy.artifact.profile import parse_profile
    from der_deploy.fileio import check_writable, sha256_file, write_bytes
    from der_deploy.progress import err_console
    from der_deploy.backends.tensorrt import cuda
    from der_deploy.artifact.sidecar import Sidecar, write_sidecar
    from der_deploy.backends.tensorrt.runner import construct, make_logger

    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    profile = parse_profile(profile)
    if precision not in PRECISIONS:
        raise ExportError(f"unknown TensorRT precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if workspace is not None and not (isinstance(workspace, (int, float)) and workspace > 0):
        raise ExportError(f"workspace must be a positive number of GiB, got {workspace!r}")
    info = inspect_onnx(onnx_path)
    card = card if card is not None else info.card
    if card is None:
        raise ExportError(f"{onnx_path} has no der-deploy model card; export it with der-export (or pass card=)")
    if INPUT_NAME not in info.inputs:
        raise ExportError(f"{onnx_path} has no input named {INPUT_NAME!r} (inputs: {', '.join(info.inputs) or 'none'}); re-export it with der-export")
    profile_shapes(INPUT_NAME, info.inputs[INPUT_NAME], profile, tuple(card.input_size))  # fail before the GPU work
    check_writable(plan_path)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        check_writable(cache_path)

    trt = tensorrt_available(tensorrt)
    major = trt_major(trt)
    net_plan = choose_network(major, precision, info)
    gpu = cuda.gpu_info(device)
    cuda.set_device(device)
    warn = lambda msg: err_console.print(f"warning: {msg}", markup=False, highlight=False)  # noqa: E731

    logger = make_logger(trt)
    builder = construct(trt.Builder, logger, what="a builder", logger=logger, exc=ExportError)
    flags = 0
    if net_plan.strongly_typed and major < 11:  # 11: always strongly typed, the flag is deprecated and ignored
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = construct(trt.OnnxParser, network, logger, what="an ONNX parser", logger=logger, exc=ExportError)
    if not parser.parse_from_file(str(onnx_path)):  # by path, so external-data weights resolve
        raise ExportError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse the ONNX ({int(parser.num_errors)} error(s)): "
                          f"{_parser_errors(parser)}; re-export with der-export or check for unsupported ops")

    config = builder.create_builder_config()
    for flag in net_plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in net_plan.clear_flags:
        if hasattr(trt.BuilderFlag, flag):
            config.clear_flag(getattr(trt.BuilderFlag, flag))
    if workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace * (1 << 30)))

    opt_profile = builder.create_optimization_profile()
    profiles = []
    for i in range(int(network.num_inputs)):
        tensor = network.get_input(i)
        shapes = profile_shapes(tensor.name, tuple(tensor.shape), profile, tuple(card.input_size))
        try:  # the binding raises RuntimeError on inconsistent shapes; it never returns False
            opt_profile.set_shape(tensor.name, *shapes)
        except RuntimeError as err:
            raise ExportError(f"TensorRT rejected the optimization profile for input {tensor.name!r} "
                              f"(min/opt/max {', '.join(map(str, shapes))}): {err}{' ' + logger.summary() if logger.errors else ''}; "
                              "check --batch MIN:OPT:MAX and re-export the ONNX with der-export") from None
        profiles.append({"input": tensor.name, "min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])})
    if config.add_optimization_profile(opt_profile) < 0:
        raise ExportError(f"TensorRT rejected the optimization profile {profiles} ({logger.summary()})")
    _load_timing_cache(config, cache_path, warn)

    started = time.perf_counter()
    with _spinner(f"Building TensorRT {precision} engine from {onnx_path.name} (minutes for a ResNet)"):
        serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None or int(getattr(serialized, "nbytes", 1)) == 0:
        raise ExportError(f"TensorRT could not build {plan_path.name} from {onnx_path.name}: {logger.summary()}; "
                          "try a larger --workspace, or check the ONNX with der-export")
    plan_bytes = memoryview(serialized).tobytes()
    for msg in logger.warnings[-5:]:
        warn(f"TensorRT: {msg}")

    write_bytes(plan_path, plan_bytes)  # plain plan, nothing prepended: trtexec / Triton load it as is
    if cache_path is not None:
        updated = config.get_timing_cache()
        if updated is not None:
            write_bytes(cache_path, memoryview(updated.serialize()).tobytes())
    sidecar = Sidecar(
        card=card, onnx_sha256=sha256_file(onnx_path), tensorrt_version=str(trt.__version__), gpu_name=gpu.name,
        compute_capability=gpu.compute_capability, precision=precision, profiles=profiles,
        build_seconds=round(seconds, 3), built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        der_deploy_version=__version__, plan_sha256=hashlib.sha256(plan_bytes).hexdigest(), onnx_name=onnx_path.name,
        extra={"workspace_gib": workspace, "strongly_typed": major >= 11 or net_plan.strongly_typed,
               "builder_flags": list(net_plan.set_flags)},
    )
    write_sidecar(plan_path, sidecar)
    return plan_path
