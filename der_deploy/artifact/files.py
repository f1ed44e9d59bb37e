"""Engine files of the contract: which kind a file is, its ONNX ``metadata_props`` read cheaply, and its model card.

``.onnx`` carries the card in ``metadata_props``; a TensorRT ``.plan``/``.engine`` in the ``<plan>.json`` sidecar."""
from __future__ import annotations

import io
from pathlib import Path

from der_deploy.errors import EngineError

from .card import ModelCard, card_from_metadata

ONNX_SUFFIXES = (".onnx",)
TRT_SUFFIXES = (".plan", ".engine")

# ModelProto field numbers (onnx.proto3): ir_version=1, graph=7, metadata_props=14 (key=1, value=2).
_IR_VERSION, _GRAPH, _METADATA = 1, 7, 14


def engine_kind(engine_path: str | Path) -> str:
    """Engine type from the suffix ("onnx" or "tensorrt"); EngineError for anything else or a missing file."""
    path = Path(engine_path)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        kind = "onnx"
    elif suffix in TRT_SUFFIXES:
        kind = "tensorrt"
    else:
        raise EngineError(
            f"{path}: unknown engine type {suffix or '(no suffix)'!r}; give an .onnx file or a TensorRT "
            ".plan/.engine built by der-export"
        )
    if not path.is_file():
        what = "folder, not an engine file" if path.is_dir() else "no such file"
        raise EngineError(f"{path}: {what}; check the path or export the model with der-export")
    return kind


# --- cheap ONNX metadata: walk the top-level protobuf fields and seek over the graph ----------------
def _varint(f: io.BufferedReader) -> int:
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            raise EOFError
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _entry(data: bytes) -> tuple[str, str]:
    f = io.BytesIO(data)
    kv = {1: "", 2: ""}
    while f.tell() < len(data):
        tag = _varint(f)
        if tag & 7 != 2:
            raise ValueError("bad metadata entry")
        raw = f.read(_varint(f))
        kv[tag >> 3] = raw.decode("utf-8")
    return kv[1], kv[2]


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file without parsing (or reading) its graph and weights."""
    path = Path(path)
    size = path.stat().st_size
    props: dict[str, str] = {}
    seen: set[int] = set()
    try:
        with open(path, "rb") as f:
            while f.tell() < size:
                tag = _varint(f)
                field, wire = tag >> 3, tag & 7
                if field == 0:
                    raise ValueError("field number 0")
                seen.add(field)
                if wire == 0:
                    _varint(f)
                elif wire == 1 or wire == 5:
                    f.seek(8 if wire == 1 else 4, io.SEEK_CUR)
                elif wire == 2:
                    length = _varint(f)
                    if f.tell() + length > size:
                        raise ValueError("length past end of file")
                    if field == _METADATA:
                        key, value = _entry(f.read(length))
                        props[key] = value
                    else:
                        f.seek(length, io.SEEK_CUR)
                else:
                    raise ValueError(f"wire type {wire}")
    except (EOFError, ValueError, UnicodeDecodeError):
        raise EngineError(f"{path}: not a valid ONNX model (corrupt or truncated); re-export it with der-export") from None
    except OSError as err:
        raise EngineError(f"{path}: cannot read ({err.strerror or err})") from None
    if _IR_VERSION not in seen or _GRAPH not in seen:
        raise EngineError(f"{path}: not a valid ONNX model (no graph); re-export it with der-export")
    return props


def read_card(engine_path: str | Path) -> ModelCard:
    """The model card stored with an engine: ONNX ``metadata_props`` or the TensorRT ``<plan>.json`` sidecar."""
    path = Path(engine_path)
    if engine_kind(path) == "tensorrt":
        from .sidecar import read_sidecar

        return read_sidecar(path).card
    return card_from_metadata(onnx_metadata(path), str(path))
