"""The ``<plan>.json`` sidecar: what a TensorRT plan was built from, with what, and for which GPU.

The plan itself stays a plain TensorRT engine (trtexec and Triton load it as is); everything der-deploy
needs -- the model card, and the facts to refuse a plan on the wrong machine -- lives beside it.

Portability rules (:func:`check_compatible`): a plan runs only under the exact TensorRT version that
built it and on a GPU of the same compute capability (we do not build version- or hardware-compatible
plans). A different GPU *name* with the same compute capability loads, but TensorRT itself warns that
performance and even correctness are not guaranteed across device models; we pass that on as a warning
rather than refuse, since e.g. an A10G and an RTX A5000 (both sm_86) share kernels.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from der_deploy.errors import CardError, EngineError

from .card import ModelCard

SIDECAR_FORMAT = "der-deploy.tensorrt-plan"
SIDECAR_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
_CC = re.compile(r"^\d+\.\d+$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def sidecar_path(plan_path: str | Path) -> Path:
    """``der.plan`` -> ``der.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


def sm(compute_capability: str) -> str:
    return "sm_" + str(compute_capability).replace(".", "")


@dataclass(frozen=True)
class Sidecar:
    card: ModelCard
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.6"
    precision: str  # fp32 | fp16 | int8
    profiles: list[dict[str, Any]]  # [{"input": "images", "min": [1,3,H,W], "opt": [...], "max": [...]}]
    build_seconds: float
    built_at: str  # UTC ISO 8601
    der_deploy_version: str
    plan_sha256: str | None = None
    onnx_name: str = ""
    format_version: int = SIDECAR_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def profile_for(self, name: str = "images") -> dict[str, Any] | None:
        for p in self.profiles:
            if p.get("input") == name:
                return p
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SIDECAR_FORMAT,
            "format_version": self.format_version,
            "card": self.card.to_dict(),
            "onnx_name": self.onnx_name,
            "onnx_sha256": self.onnx_sha256,
            "plan_sha256": self.plan_sha256,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "profiles": [dict(p) for p in self.profiles],
            "build_seconds": self.build_seconds,
            "built_at": self.built_at,
            "der_deploy_version": self.der_deploy_version,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "sidecar") -> "Sidecar":
        """Validate everything; any problem -> EngineError naming ``where`` and the fix."""
        fix = "rebuild the plan with der-export --trt"

        def bad(msg: str) -> EngineError:
            return EngineError(f"{where}: {msg}; {fix}")

        if not isinstance(data, dict):
            raise bad(f"must be a JSON object, got {type(data).__name__}")
        if data.get("format") != SIDECAR_FORMAT:
            raise bad(f"not a der-deploy TensorRT sidecar (format {data.get('format')!r})")
        if data.get("format_version") != SIDECAR_VERSION:
            raise bad(f"sidecar format version {data.get('format_version')!r} is not supported (this der-deploy reads {SIDECAR_VERSION})")
        required = ("card", "onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision",
                    "profiles", "build_seconds", "built_at", "der_deploy_version")
        missing = [k for k in required if k not in data]
        if missing:
            raise bad(f"missing field(s) {', '.join(missing)}")
        for key in ("tensorrt_version", "gpu_name", "built_at", "der_deploy_version"):
            if not isinstance(data[key], str) or not data[key].strip():
                raise bad(f"field {key!r} must be a non-empty string")
        if not isinstance(data["onnx_sha256"], str) or not _SHA.match(data["onnx_sha256"]):
            raise bad("field 'onnx_sha256' must be a 64-digit hex SHA-256")
        plan_sha = data.get("plan_sha256")
        if plan_sha is not None and (not isinstance(plan_sha, str) or not _SHA.match(plan_sha)):
            raise bad("field 'plan_sha256' must be a 64-digit hex SHA-256 or null")
        if not isinstance(data["compute_capability"], str) or not _CC.match(data["compute_capability"]):
            raise bad(f"field 'compute_capability' must look like '8.6', got {data['compute_capability']!r}")
        if data["precision"] not in PRECISIONS:
            raise bad(f"field 'precision' must be one of {', '.join(PRECISIONS)}, got {data['precision']!r}")
        secs = data["build_seconds"]
        if isinstance(secs, bool) or not isinstance(secs, (int, float)) or secs < 0:
            raise bad(f"field 'build_seconds' must be a non-negative number, got {secs!r}")
        profiles = _check_profiles(data["profiles"], bad)
        try:
            card = ModelCard.from_dict(data["card"])
        except CardError as err:
            raise bad(f"bad model card ({err})") from None
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            raise bad("field 'extra' must be an object")
        return cls(card=card, onnx_sha256=data["onnx_sha256"], tensorrt_version=data["tensorrt_version"],
                   gpu_name=data["gpu_name"], compute_capability=data["compute_capability"],
                   precision=data["precision"], profiles=profiles, build_seconds=float(secs),
                   built_at=data["built_at"], der_deploy_version=data["der_deploy_version"], plan_sha256=plan_sha,
                   onnx_name=str(data.get("onnx_name", "")), extra=extra)


def _check_profiles(profiles: Any, bad) -> list[dict[str, Any]]:
    if not isinstance(profiles, list) or not profiles:
        raise bad("field 'profiles' must be a non-empty list")
    out = []
    for i, p in enumerate(profiles):
        if not isinstance(p, dict) or not isinstance(p.get("input"), str):
            raise bad(f"profile {i} must be an object with an 'input' name")
        shapes = []
        for key in ("min", "opt", "max"):
            s = p.get(key)
            if not isinstance(s, list) or not s or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s):
                raise bad(f"profile {i} ({p['input']}): {key!r} must be a list of positive integers, got {s!r}")
            shapes.append(s)
        if not len(shapes[0]) == len(shapes[1]) == len(shapes[2]):
            raise bad(f"profile {i} ({p['input']}): min/opt/max have different ranks")
        if not all(a <= b <= c for a, b, c in zip(*shapes)):
            raise bad(f"profile {i} ({p['input']}): needs min <= opt <= max in every dimension, got {shapes}")
        out.append({"input": p["input"], "min": shapes[0], "opt": shapes[1], "max": shapes[2]})
    return out


def write_sidecar(plan_path: str | Path, sidecar: Sidecar) -> Path:
    """Write ``<plan>.json`` atomically; returns its path."""
    from der_deploy.fileio import write_text

    path = sidecar_path(plan_path)
    write_text(path, json.dumps(sidecar.to_dict(), indent=2) + "\n")
    return path


def read_sidecar(plan_path: str | Path) -> Sidecar:
    """The validated sidecar of ``plan_path``; EngineError when it is missing or malformed."""
    plan_path = Path(plan_path)
    path = sidecar_path(plan_path)
    if not path.is_file():
        raise EngineError(
            f"{path}: missing; a TensorRT plan needs its sidecar (model card, TensorRT version, GPU) next to it -- "
            f"copy it along with {plan_path.name}, or rebuild with der-export --trt"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise EngineError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err}); rebuild with der-export --trt") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise EngineError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); rebuild with der-export --trt") from None
    return Sidecar.from_dict(data, where=str(path))


def check_compatible(sidecar: Sidecar, trt_version: str, gpu_name: str, compute_capability: str,
                     *, plan: str | Path = "der.plan") -> list[str]:
    """Refuse (EngineError) a plan from another TensorRT version or compute capability; return warnings.

    A different GPU model with the same compute capability is a warning, not an error (see module doc).
    """
    plan_name = Path(plan).name
    if sidecar.tensorrt_version != str(trt_version) or sidecar.compute_capability != str(compute_capability):
        onnx = sidecar.onnx_name or "model.onnx"
        raise EngineError(
            f"{plan_name} was built with TensorRT {sidecar.tensorrt_version} on {sidecar.gpu_name} "
            f"({sm(sidecar.compute_capability)}); this machine has TensorRT {trt_version} on {gpu_name} "
            f"({sm(compute_capability)}); rebuild it from the ONNX: der-export {onnx} --trt"
        )
    if sidecar.gpu_name.strip() != str(gpu_name).strip():
        return [
            f"{plan_name} was built on {sidecar.gpu_name} and runs on {gpu_name} (same {sm(compute_capability)}); "
            "TensorRT does not guarantee performance across GPU models -- rebuild here for best results"
        ]
    return []
