"""The model card: everything a runtime needs to use a trained DER model correctly.

It travels with every artifact: inside the checkpoint (as plain data), in ONNX ``metadata_props``
under :data:`ONNX_METADATA_KEY`, and in the ``.plan.json`` sidecar next to a TensorRT engine.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from der_deploy.errors import CardError, EngineError

from .keys import CARD_KEY as ONNX_METADATA_KEY

FORMAT_VERSION = 1
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
CHANNEL_ORDERS = ("RGB", "BGR")
# "draft": JPEGs are decoded DCT-scaled to the smallest 1/2, 1/4, 1/8 that still covers input_size (der_deploy.images).
DECODE_MODES = ("full", "draft")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _default_provenance() -> dict[str, Any]:
    from der_deploy import __version__

    return {
        "data": None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "der_deploy_version": __version__,
    }


@dataclass
class ModelCard:
    """Ordered class names plus the preprocessing and decision rules that belong to the weights.

    ``ModelCard(classes=[...], arch="resnet101", input_size=(448, 448))`` is enough; every other field
    has a default. ``thresholds`` defaults to 0.5 per class.
    """

    classes: list[str]
    arch: str = "resnet101"
    input_size: tuple[int, int] = (448, 448)  # (H, W)
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    thresholds: list[float] | None = None
    format_version: int = FORMAT_VERSION
    provenance: dict[str, Any] = field(default_factory=_default_provenance)
    decode: str = "full"  # last, and written only when not "full": readers that predate it still load full cards

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes] if isinstance(self.classes, (list, tuple)) else self.classes
        if self.thresholds is None and isinstance(self.classes, list):
            self.thresholds = [0.5] * len(self.classes)
        for name in ("input_size", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        if isinstance(self.thresholds, tuple):
            self.thresholds = list(self.thresholds)
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def validate(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise CardError(
                f"model card format version {self.format_version!r} is not supported (this der-deploy reads "
                f"version {FORMAT_VERSION}); re-export the model with this der-deploy version"
            )
        if not isinstance(self.classes, list) or not self.classes:
            raise CardError("model card has no classes; it needs an ordered list of class names")
        if len(set(self.classes)) != len(self.classes):
            dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise CardError(f"model card has duplicate class names: {', '.join(dup)}")
        if not isinstance(self.arch, str) or not self.arch:
            raise CardError("model card arch must be a non-empty string such as 'resnet101'")
        if (
            not isinstance(self.input_size, tuple) or len(self.input_size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in self.input_size)
        ):
            raise CardError(f"model card input_size must be two positive integers (H, W), got {self.input_size!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise CardError(f"model card interpolation {self.interpolation!r} is unknown; use one of {', '.join(INTERPOLATIONS)}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise CardError(f"model card channel_order {self.channel_order!r} is unknown; use RGB or BGR")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if (
                not isinstance(value, tuple) or len(value) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            ):
                raise CardError(f"model card {name} must be three finite numbers, got {value!r}")
        if any(v <= 0 for v in self.std):
            raise CardError(f"model card std must be positive, got {self.std!r}")
        if not isinstance(self.thresholds, list) or len(self.thresholds) != len(self.classes):
            n = len(self.thresholds) if isinstance(self.thresholds, list) else self.thresholds
            raise CardError(f"model card has {n} thresholds for {len(self.classes)} classes; give one threshold per class")
        if not all(isinstance(t, (int, float)) and 0.0 <= t <= 1.0 for t in self.thresholds):
            raise CardError("model card thresholds must be probabilities in [0, 1]")
        if not isinstance(self.provenance, dict):
            raise CardError("model card provenance must be a mapping")
        if self.decode not in DECODE_MODES:
            raise CardError(f"model card decode {self.decode!r} is unknown; use full or draft")

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in ("input_size", "mean", "std"):
            data[name] = list(data[name])
        if data["decode"] == "full":  # the default, and all that older readers (which refuse unknown fields) know
            del data["decode"]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ModelCard":
        if not isinstance(data, dict):
            raise CardError(f"model card must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CardError(f"model card has unknown fields: {', '.join(unknown)}")
        if "classes" not in data:
            raise CardError("model card has no 'classes' field")
        data = dict(data)
        if "format_version" not in data:
            raise CardError("model card has no 'format_version' field; it was not written by der-deploy")
        try:
            return cls(**data)
        except TypeError as err:
            raise CardError(f"model card is malformed: {err}") from None

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelCard":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CardError(f"model card is not valid JSON: {err}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        from der_deploy.fileio import write_text

        return write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise CardError(f"{path}: cannot read model card ({err.strerror})") from None
        try:
            return cls.from_json(text)
        except CardError as err:
            raise CardError(f"{path}: {err}") from None

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)


def card_from_metadata(props: dict[str, str], where: str) -> ModelCard:
    """The card stored in an ONNX file's ``metadata_props`` (given as a dict); EngineError names ``where``."""
    text = props.get(ONNX_METADATA_KEY)
    if text is None:
        raise EngineError(f"{where} has no der-deploy model card; export it with der-export")
    try:
        return ModelCard.from_json(text)
    except CardError as err:
        raise EngineError(f"{where}: bad model card ({err}); re-export it with der-export") from None
