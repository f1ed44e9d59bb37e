"""What this CPU can run natively: /proc/cpuinfo flags, and OpenVINO's own view when it is installed.

Torch-free and openvino-free at import: :func:`cpu_info` reads only ``/proc/cpuinfo``; :func:`openvino_capabilities`
imports openvino inside the call and answers None when it is not installed. der-doctor and the OpenVINO runner's
refusal messages share these facts, so both name the same missing feature.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

from der_deploy.errors import BackendUnavailable

from .core import shared_core

# /proc/cpuinfo flag -> how people write it. Order = how der-doctor lists them.
FLAGS = {
    "amx_tile": "AMX", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8", "amx_fp16": "AMX-FP16",
    "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "avx512_fp16": "AVX-512 FP16",
    "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "avx2": "AVX2",
}
# Precision (our name) -> the instruction sets that run it natively, best first, and OpenVINO's capability name.
NATIVE = {
    "bf16": (("amx_bf16", "avx512_bf16"), "BF16"),
    "fp16": (("amx_fp16", "avx512_fp16"), "FP16"),
    "int8": (("amx_int8", "avx512_vnni", "avx_vnni"), "INT8"),
}
PRECISIONS = ("fp32", "bf16", "fp16")  # what --precision accepts (INT8 comes from the Q/DQ file itself)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset = field(default_factory=frozenset)

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def features(self) -> dict[str, bool]:
        """Every flag of :data:`FLAGS` -> present."""
        return {name: name in self.flags for name in FLAGS}

    def native_by_flags(self) -> list[str]:
        """Precisions with native instructions here, judged from the flags alone (OpenVINO not needed)."""
        out = ["fp32"]
        out += [p for p, (flags, _) in NATIVE.items() if any(f in self.flags for f in flags)]
        return out

    def speedups(self) -> list[str]:
        """The instruction sets that make BF16 / INT8 fast, as people write them (empty on e.g. AVX2-only CPUs)."""
        wanted = NATIVE["bf16"][0] + NATIVE["int8"][0]
        return [FLAGS[f] for f in FLAGS if f in wanted and f in self.flags]


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's ``model name`` and ``flags`` (all cores of one machine report the same)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown CPU", flags)


def cpu_info(path: str | Path = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CPU; an empty flag set where /proc/cpuinfo is missing (not Linux) or unreadable."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text)


def openvino_capabilities(core=None) -> list[str] | None:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` for CPU (e.g. FP32, INT8, BF16), or None when not installed."""
    if core is None:
        try:
            core = shared_core()
        except BackendUnavailable:  # not installed
            return None
    return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def native_precisions(caps: list[str] | None, info: CpuInfo | None = None) -> list[str]:
    """Native precisions: OpenVINO's capabilities when known (they decide what it will run), else the flags."""
    if caps is None:
        return (info or cpu_info()).native_by_flags()
    have = {c.upper() for c in caps}
    return ["fp32"] + [p for p, (_, cap) in NATIVE.items() if cap in have]


def missing_line(precision: str, info: CpuInfo | None = None) -> str:
    """Why ``precision`` cannot run natively here, and the fix: the tail of the runner's one-line refusal."""
    info = info or cpu_info()
    flags, _ = NATIVE[precision]
    wanted = " or ".join(FLAGS[f] for f in flags)
    return (f"this CPU ({info.model}) has no {wanted}, so OpenVINO cannot run {precision} natively; "
            f"use --precision fp32, or a CPU with {wanted}")
