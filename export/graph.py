"""ONNX I/O for every export step (FP32, FP16, INT8): load, check, save atomically, card metadata, and the
graph facts the variants rely on (the fused head's nodes, constant Reduce axes for TensorRT). onnx only, no torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from der_deploy import __version__
from der_deploy.artifact.card import ONNX_METADATA_KEY, ModelCard, card_from_metadata
from der_deploy.errors import EngineError, ExportError
from der_deploy.fileio import atomic_path

if TYPE_CHECKING:
    import onnx

_PROTOBUF_LIMIT = 2**31 - 1
# Node annotations that carry local file paths and FX dumps: useless to users, and they leak the build machine.
_DROP_NODE_META = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


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
