"""Checkpoint -> verified FP32 ONNX with a dynamic batch, the fused DER head and the model card inside.

Graph helpers used by every variant (FP16, INT8) live here too: constant-axes check for Reduce ops
(TensorRT rejects computed axes), the head's node set, card metadata and atomic saving.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from der_deploy import __version__
from der_deploy.card import ONNX_METADATA_KEY, ModelCard, card_from_metadata
from der_deploy.errors import EngineError, ExportError
from der_deploy.fileio import atomic_path, check_writable

from .profile import BatchProfile, parse_profile

if TYPE_CHECKING:
    import onnx

    from der_deploy.compare import CompareResult

PRECISION_KEY = "der_deploy.precision"  # "fp32", "fp16", "int8-u8s8", "int8-s8s8"
BATCH_KEY = "der_deploy.batch"  # the MIN:OPT:MAX asked for at export; a hint for TensorRT profiles
_PROTOBUF_LIMIT = 2**31 - 1
# Node annotations that carry local file paths and FX dumps: useless to users, and they leak the build machine.
_DROP_NODE_META = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


@dataclass
class ExportReport:
    path: Path
    card: ModelCard
    seconds: float  # trace + write, verification excluded
    verification: "CompareResult | None"
    verify_seconds: float = 0.0


# --- graph helpers (onnx only, no torch) ----------------------------------------------------------
def check_reduce_axes(model: "onnx.ModelProto", where: str = "model") -> None:
    """Raise ExportError unless every Reduce* node's axes are an attribute, an initializer or a Constant."""
    consts = {i.name for i in model.graph.initializer}
    consts.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    for node in model.graph.node:
        if node.op_type.startswith("Reduce") and len(node.input) > 1 and node.input[1]:
            if node.input[1] not in consts:
                raise ExportError(
                    f"{where}: {node.op_type} node {node.name!r} takes its axes from computed tensor "
                    f"{node.input[1]!r}; TensorRT needs constant axes (export with a fixed reduce dimension)"
                )


def head_node_names(model: "onnx.ModelProto") -> list[str]:
    """Names of the fused head's nodes: everything downstream of the backbone features X.

    X is the data input of the first ReduceMax (GMP); the backbone itself has no ReduceMax (it max-pools with
    MaxPool). These nodes stay FP32 in the FP16 variant and unquantized in INT8 ones.
    """
    nodes = list(model.graph.node)
    first = next((n for n in nodes if n.op_type == "ReduceMax"), None)
    if first is None:
        raise ExportError("graph has no ReduceMax (global max pooling); it is not a der-deploy DER export")
    frontier, names = {first.input[0]}, []
    for node in nodes:  # ONNX nodes are topologically sorted
        if any(i in frontier for i in node.input):
            names.append(node.name)
            frontier.update(node.output)
    if any(not n for n in names):
        raise ExportError("graph has unnamed head nodes; re-export it with der-export")
    return names


def set_metadata(model: "onnx.ModelProto", card: ModelCard, **extra: str) -> None:
    """Write the card (and ``extra`` der_deploy.* keys) into metadata_props, replacing old values."""
    values = {ONNX_METADATA_KEY: card.to_json(indent=None), **extra}
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for key, value in keep + list(values.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version = "der-deploy", __version__
    c = card.num_classes
    model.doc_string = (
        f"DER multi-label classifier ({card.arch}, {c} classes). Input 'images' N x 3 x {card.input_size[0]} x "
        f"{card.input_size[1]} float32, preprocessed per the card in metadata_props['{ONNX_METADATA_KEY}']. "
        f"Outputs 'logits' and 'scores' (sigmoid) N x {c}."
    )


def metadata(model: "onnx.ModelProto") -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def card_from_model(model: "onnx.ModelProto", where: str = "model") -> ModelCard:
    return card_from_metadata(metadata(model), where)


def load_onnx(path: str | Path) -> "onnx.ModelProto":
    import onnx

    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path}: no such ONNX file")
    try:
        return onnx.load(str(path))
    except Exception as err:  # protobuf DecodeError and friends
        raise EngineError(f"{path}: not an ONNX model ({str(err).splitlines()[0][:160] if str(err) else type(err).__name__})") from None


def read_onnx_card(path: str | Path) -> ModelCard:
    """The card stored in an ONNX file written by der-export (loads the whole file; for tools and tests)."""
    return card_from_model(load_onnx(path), str(path))


def check_model(model: "onnx.ModelProto", where: str = "model") -> "onnx.ModelProto":
    """Full ONNX checker, strict shape inference, constant Reduce axes; returns the shape-inferred model."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"{where}: ONNX check failed: {str(err).strip().splitlines()[0][:300]}") from None
    check_reduce_axes(inferred, where)
    return inferred


def save_onnx(model: "onnx.ModelProto", path: str | Path, verify: Callable[[Path], object] | None = None) -> Path:
    """Atomically save a single-file ONNX; fail clearly when it would need external data (> 2 GB).

    ``verify(tmp_path)`` runs on the written temp file before it is renamed into place, so a model that
    fails verification never appears at ``path``.
    """
    import onnx

    size = model.ByteSize()
    if size >= _PROTOBUF_LIMIT:
        raise ExportError(f"{path}: model is {size / 2**30:.1f} GB, over ONNX's 2 GB single-file limit; "
                          "der-deploy writes single-file models only (use a smaller architecture)")
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
        if verify is not None:
            verify(tmp)
    return Path(path)


def strip_node_metadata(model: "onnx.ModelProto", keys: Iterable[str] = _DROP_NODE_META) -> None:
    keys = set(keys)
    for node in model.graph.node:
        keep = [(p.key, p.value) for p in node.metadata_props if p.key not in keys]
        del node.metadata_props[:]
        for k, v in keep:
            e = node.metadata_props.add()
            e.key, e.value = k, v


# --- export ----------------------------------------------------------------------------------------
def _load(checkpoint):
    """A checkpoint path, or an already loaded (model, card) pair."""
    if isinstance(checkpoint, tuple):
        return checkpoint
    from der_deploy.train.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)


def trace_to_onnx(model, card: ModelCard, *, opset: int | None, profile: BatchProfile, cadm: bool) -> "onnx.ModelProto":
    """torch.onnx (dynamo) export of backbone + FusedHead with a dynamic batch named 'batch'."""
    import torch

    from .fold import ExportModel

    net = ExportModel(model, cadm=cadm).eval()
    params = sum(t.numel() * t.element_size() for t in list(net.parameters()) + list(net.buffers()))
    if params >= _PROTOBUF_LIMIT:
        raise ExportError(f"model weights are {params / 2**30:.1f} GB, over ONNX's 2 GB single-file limit")
    h, w = model.input_size
    # Trace with batch >= 2 so that no batch size is specialised into the graph.
    example = torch.zeros(max(2, profile.min), 3, h, w)
    batch = torch.export.Dim("batch", min=1, max=max(profile.max, example.shape[0]))
    kwargs = {} if opset is None else {"opset_version": int(opset)}
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                net, (example,), dynamo=True, input_names=["images"], output_names=net.output_names,
                dynamic_shapes={"images": {0: batch}}, verbose=False, **kwargs,
            )
        onnx_model = program.model_proto
    except Exception as err:  # the exporter raises many kinds; the user needs the first line
        msg = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ExportError(f"torch.onnx export of {card.arch} failed ({msg})") from None
    strip_node_metadata(onnx_model)
    return onnx_model


def export_onnx_report(
    checkpoint,
    out_path: str | Path,
    *,
    opset: int | None = None,
    batch=(1, 32),
    cadm: bool = False,
    verify: bool = True,
    samples: str | Path | None = None,
    show: bool = True,
) -> ExportReport:
    """Export, check, verify against the training model in ONNX Runtime, then (only if all passed) write."""
    out_path = check_writable(out_path)
    profile = parse_profile(batch)
    start = time.perf_counter()
    model, card = _load(checkpoint)
    if cadm and model.head != "der":
        raise ExportError(f"{card.arch} baseline model has no CADMs; export it without --cadm")
    onnx_model = trace_to_onnx(model, card, opset=opset, profile=profile, cadm=cadm)
    set_metadata(onnx_model, card, **{PRECISION_KEY: "fp32", BATCH_KEY: str(profile)})
    onnx_model = check_model(onnx_model, str(out_path))
    report = ExportReport(out_path, card, time.perf_counter() - start, None)

    def check(tmp: Path) -> None:
        from .verify import reference_outputs, sample_inputs, verify_onnx

        t0 = time.perf_counter()
        images, source = sample_inputs(card, samples)
        ref = reference_outputs(model, images, cadm=cadm)
        report.verification = verify_onnx(tmp, ref, images, "fp32", title=f"verify {out_path.name} (FP32, {source})", show=show)
        report.verification.raise_if_failed(f"{out_path}: FP32 ONNX vs PyTorch")
        report.verify_seconds = time.perf_counter() - t0

    save_onnx(onnx_model, out_path, check if verify else None)
    return report


def export_onnx(
    checkpoint,
    out_path: str | Path,
    *,
    opset: int | None = None,
    batch=(1, 32),
    cadm: bool = False,
    verify: bool = True,
    samples: str | Path | None = None,
) -> Path:
    """Write a verified FP32 ONNX (see :func:`export_onnx_report` for the timings and error statistics)."""
    return export_onnx_report(checkpoint, out_path, opset=opset, batch=batch, cadm=cadm, verify=verify,
                              samples=samples, show=False).path
