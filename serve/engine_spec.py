"""What a Triton repository needs to know about an engine file (.onnx, or .plan + sidecar), read from the file.

The names, dtypes and dims of its inputs and outputs, its card and its batch profile; an engine that does not
match der-export's contract (one input 'images', a 'scores' output of the card's classes, a dynamic batch axis)
is refused here, before any config is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from der_deploy.artifact.card import ModelCard
from der_deploy.artifact.keys import BATCH_KEY
from der_deploy.artifact.profile import BatchProfile, parse_profile
from der_deploy.errors import ExportError

IMAGES, SCORES = "images", "scores"
_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 11: "TYPE_FP64", 2: "TYPE_UINT8",
                   3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL"}


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton TYPE_* name
    dims: tuple[int, ...]  # without the batch dimension; -1 = variable


@dataclass
class EngineSpec:
    """What the repository needs to know about an engine file, read from the file itself."""

    path: Path
    kind: str  # "onnx" | "plan"
    card: ModelCard
    inputs: list[Tensor]
    outputs: list[Tensor]
    profile: BatchProfile
    sidecar: Path | None = None
    notes: list[str] = field(default_factory=list)


def _onnx_tensors(values, where: Path) -> list[Tensor]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dtype = _ONNX_TO_TRITON.get(t.elem_type)
        if dtype is None:
            raise ExportError(f"{where}: tensor {v.name!r} has ONNX element type {t.elem_type}, which Triton "
                              "cannot serve; re-export the model with der-export")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims or dims[0] > 0:
            raise ExportError(f"{where}: tensor {v.name!r} has a fixed batch dimension {dims[:1]}; Triton batches "
                              "on a dynamic first axis -- re-export with der-export (its batch axis is dynamic)")
        out.append(Tensor(v.name, dtype, tuple(dims[1:])))
    return out


def inspect_engine(path: str | Path) -> EngineSpec:
    """Read I/O names, dtypes and dims, the card and the batch profile from an .onnx or a .plan (+ sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file; export the model with der-export first")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _inspect_onnx(path)
    if suffix in (".plan", ".engine"):
        return _inspect_plan(path)
    raise ExportError(f"{path}: a Triton repository is made from an .onnx or a .plan written by der-export")


def _inspect_onnx(path: Path) -> EngineSpec:
    import onnx

    from der_deploy.artifact.card import card_from_metadata


    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, OSError, ...
        raise ExportError(f"{path}: not a readable ONNX model ({err}); re-export it with der-export") from None
    meta = {p.key: p.value for p in model.metadata_props}
    card = card_from_metadata(meta, str(path))
    init = {i.name for i in model.graph.initializer}
    inputs = _onnx_tensors([v for v in model.graph.input if v.name not in init], path)
    outputs = _onnx_tensors(model.graph.output, path)
    notes = []
    if BATCH_KEY in meta:
        profile = parse_profile(meta[BATCH_KEY])
    else:
        profile = parse_profile("1:32")
        notes.append(f"{path.name} records no batch profile; max_batch_size 32 (set --max-batch to change it)")
    spec = EngineSpec(path, "onnx", card, inputs, outputs, profile, notes=notes)
    _check_io(spec)
    return spec


def _inspect_plan(path: Path) -> EngineSpec:
    from der_deploy.fileio import sha256_file
    from der_deploy.artifact.sidecar import read_sidecar, sidecar_path

    side = read_sidecar(path)
    prof = side.profile_for(IMAGES)
    if prof is None:
        raise ExportError(f"{sidecar_path(path)}: no optimization profile for input 'images'; rebuild with der-export --trt")
    profile = BatchProfile(int(prof["min"][0]), int(prof["opt"][0]), int(prof["max"][0]))
    # The plan's bindings are those of the ONNX it was built from; read them from that file when it is
    # still beside the plan (checked by hash), else they are der-export's fixed contract.
    onnx_file = path.with_name(side.onnx_name) if side.onnx_name else None
    notes: list[str] = []
    if onnx_file is not None and onnx_file.is_file() and sha256_file(onnx_file) == side.onnx_sha256:
        src = _inspect_onnx(onnx_file)
        inputs, outputs = src.inputs, src.outputs
    else:
        h, w = side.card.input_size
        c = side.card.num_classes
        inputs = [Tensor(IMAGES, "TYPE_FP32", (3, h, w))]
        outputs = [Tensor("logits", "TYPE_FP32", (c,)), Tensor(SCORES, "TYPE_FP32", (c,))]
        notes.append(f"I/O of {path.name} taken from der-export's contract (its ONNX {side.onnx_name or '?'} is not beside it)")
    spec = EngineSpec(path, "plan", side.card, inputs, outputs, profile, sidecar=sidecar_path(path), notes=notes)
    _check_io(spec)
    return spec


def _check_io(spec: EngineSpec) -> None:
    h, w = spec.card.input_size
    names = [t.name for t in spec.inputs]
    if names != [IMAGES] or spec.inputs[0].dims not in ((3, h, w), (3, -1, -1)):
        raise ExportError(f"{spec.path}: expected one input 'images' (N, 3, {h}, {w}), found "
                          f"{[(t.name, t.dims) for t in spec.inputs]}; re-export the model with der-export")
    out = {t.name: t for t in spec.outputs}
    if SCORES not in out or out[SCORES].dims != (spec.card.num_classes,):
        raise ExportError(f"{spec.path}: no 'scores' output of {spec.card.num_classes} classes; re-export the model "
                          "with der-export")
