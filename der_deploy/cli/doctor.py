"""``der-doctor``: which backends, execution providers, GPUs, CPU features and versions this machine has -- and why not.

Every probe runs in its own try/except and records the reason, so the command never crashes. torch is
never imported (its version comes from the package metadata): the runtime must stay torch-free.
"""
from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import subprocess
import sys
from importlib import metadata

import click

from ._common import handle_errors

TRT_HINT = ("pip install der-deploy[trt] on a machine with an NVIDIA GPU (CUDA 13 builds; on a CUDA 12 driver: "
            "pip install der-deploy[trt-cu12])")
# ONNX Runtime's TensorRT provider loads TensorRT 11 only from 1.27 on.
ORT_FOR_TRT11 = (1, 27)
GPU_HINT = "GPU providers need onnxruntime-gpu: pip install der-deploy[gpu] (ONNX Runtime >= 1.27 for TensorRT 11)"
OV_INSTALL = "pip install 'der-deploy[openvino]'"


def _row(component: str, ok: bool, version: str = "", detail: str = "", hint: str = "") -> dict:
    return {"component": component, "ok": bool(ok), "version": version, "detail": detail, "hint": hint}


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package raises instead of returning None
        return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def probe_python() -> dict:
    return _row("python", True, platform.python_version(), f"{platform.python_implementation()} on {platform.platform(terse=True)}")


def probe_numpy() -> dict:
    import numpy

    return _row("numpy", True, numpy.__version__)


def probe_onnx() -> dict:
    version = _dist_version("onnx")
    if version is None:
        return _row("onnx", False, detail="not installed", hint="pip install der-deploy (onnx is a core dependency)")
    return _row("onnx", True, version)


def probe_onnxruntime() -> dict:
    if not _has_module("onnxruntime"):
        return _row("onnxruntime", False, detail="not installed", hint="pip install der-deploy (or der-deploy[gpu] for CUDA)")
    import onnxruntime as ort

    providers = list(ort.get_available_providers())
    dist = "onnxruntime-gpu" if _dist_version("onnxruntime-gpu") else "onnxruntime"
    short = {"CPUExecutionProvider": "CPU", "CUDAExecutionProvider": "CUDA", "TensorrtExecutionProvider": "TensorRT EP"}
    detail = f"{dist}; providers: {', '.join(short.get(p, p) for p in providers)}"
    hint = "" if "CUDAExecutionProvider" in providers else GPU_HINT
    trt_version = _tensorrt_dist()[1]
    if "TensorrtExecutionProvider" in providers and _major(trt_version) >= 11 and _version_tuple(ort.__version__) < ORT_FOR_TRT11:
        detail += f"; its TensorRT provider cannot load TensorRT {trt_version} (needs ONNX Runtime >= 1.27)"
        hint = "pip install -U 'onnxruntime-gpu>=1.27' for the TensorRT provider with TensorRT 11"
    return _row("onnxruntime", True, ort.__version__, detail, hint)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in str(version).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit()) if p[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _major(version: str | None) -> int:
    v = _version_tuple(version or "")
    return v[0] if v else 0


def _tensorrt_dist() -> tuple[str | None, str | None]:
    """(distribution, version) of the installed TensorRT wheel, read from metadata without importing it."""
    for name in ("tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt"):
        version = _dist_version(name)
        if version is not None:
            return name, version
    return None, None


def _cpu():
    from der_deploy.backends.openvino.cpu import cpu_info  # no openvino import: /proc/cpuinfo only

    return cpu_info()


def probe_cpu() -> dict:
    """CPU model and the instruction sets that make BF16 / INT8 fast (every flag: the CPU features section)."""
    info = _cpu()
    speedups = info.speedups()
    detail = f"{info.model}; BF16/INT8 speed-ups: " + (", ".join(speedups) if speedups else
                                                       "none (no AMX, AVX-512 BF16 or VNNI)")
    return _row("cpu", True, platform.machine(), detail)


def _openvino_hint(speedups: list[str], native: list[str]) -> str:
    """How to use this CPU's speed-ups: --backend auto runs ONNX Runtime, so OpenVINO must be asked for."""
    if not speedups:
        return ""
    how = "--precision bf16 (and der-export's .int8.onnx)" if "bf16" in native else "on der-export's .int8.onnx"
    return f"this CPU has {', '.join(speedups)}: der-infer --backend openvino {how} uses them (auto runs ONNX Runtime)"


def probe_openvino() -> dict:
    """OpenVINO's version and what it runs natively on this CPU; a hint when the CPU would profit from it."""
    from der_deploy.backends.openvino.cpu import native_precisions, openvino_capabilities

    info = _cpu()
    speedups = info.speedups()
    if not _has_module("openvino"):
        hint = (f"{OV_INSTALL}: this CPU has {', '.join(speedups)}, which OpenVINO uses for BF16/INT8"
                if speedups else f"{OV_INSTALL} (optional CPU backend, --backend openvino)")
        return _row("openvino", False, detail="not installed", hint=hint)
    try:
        import openvino as ov

        caps = openvino_capabilities()  # on the process's shared Core
    except Exception as err:
        return _row("openvino", False, _dist_version("openvino") or "?",
                    f"installed but cannot be loaded ({_first_line(err)})", "pip install -U openvino")
    native = native_precisions(caps, info)
    detail = f"CPU capabilities {', '.join(caps)}; native precisions: {', '.join(native)}; used with --backend openvino"
    return _row("openvino", True, ov.__version__.split("-")[0], detail, _openvino_hint(speedups, native))


def probe_torch() -> dict:
    # find_spec + metadata only: importing torch takes seconds and the runtime must not need it.
    if not _has_module("torch"):
        return _row("torch", False, detail="not installed (training and export need pip install der-deploy[train])",
                    hint="pip install der-deploy[train]")
    return _row("torch", True, _dist_version("torch") or "?", "training and export available")


def probe_tensorrt() -> dict:
    if not _has_module("tensorrt"):
        return _row("tensorrt", False, detail="not installed", hint=TRT_HINT)
    try:
        import tensorrt as trt
    except Exception as err:
        return _row("tensorrt", False, detail=f"installed but cannot be loaded ({_first_line(err)})", hint=TRT_HINT)
    dist = _tensorrt_dist()[0]
    cuda_major = dist.rsplit("-cu", 1)[1] if dist and "-cu" in dist else None
    detail = "engine builds and .plan inference" + (f" ({dist}: needs a CUDA {cuda_major} driver)" if cuda_major else "")
    return _row("tensorrt", True, str(getattr(trt, "__version__", "?")), detail)


def probe_cuda_python() -> tuple[dict, list | None]:
    """cuda-python row, and the GPU list it sees (None when it cannot look)."""
    version = _dist_version("cuda-python", "cuda-bindings")
    if not (_has_module("cuda.bindings") or _has_module("cuda.cudart")):
        return _row("cuda-python", False, detail="not installed", hint=TRT_HINT), None
    from der_deploy.backends.tensorrt import cuda

    try:
        cuda.load_cudart()
        gpus = cuda.list_gpus()
        vers = cuda.versions()
    except Exception as err:
        return _row("cuda-python", False, version or "?", f"cannot query CUDA ({_first_line(err)})", TRT_HINT), None
    detail = ", ".join(f"CUDA {k} {v}" for k, v in vers.items()) or "no CUDA driver"
    if not gpus:
        detail += f"; {cuda.no_gpu_message()}"  # e.g. driver missing or too old for this cuda-python's CUDA
    return _row("cuda-python", True, version or "?", detail), [
        {"index": g.index, "name": g.name, "compute_capability": g.compute_capability, "memory_gib": round(g.total_memory / 2**30, 1)}
        for g in gpus
    ]


def probe_nvidia_smi() -> list | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,compute_cap,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            try:
                mem = round(float(parts[3]) / 1024, 1)
            except ValueError:
                mem = None
            gpus.append({"index": int(parts[0]) if parts[0].isdigit() else parts[0], "name": parts[1],
                         "compute_capability": parts[2], "memory_gib": mem})
    return gpus


def _safe(probe, name: str):
    try:
        return probe()
    except Exception as err:  # a probe must never take der-doctor down
        return _row(name, False, detail=f"probe failed ({_first_line(err)})")


def collect() -> dict:
    rows = [_safe(p, n) for p, n in ((probe_python, "python"), (probe_numpy, "numpy"), (probe_onnx, "onnx"),
                                     (probe_onnxruntime, "onnxruntime"), (probe_cpu, "cpu"),
                                     (probe_openvino, "openvino"), (probe_torch, "torch"),
                                     (probe_tensorrt, "tensorrt"))]
    try:
        cuda_row, gpus = probe_cuda_python()
    except Exception as err:
        cuda_row, gpus = _row("cuda-python", False, detail=f"probe failed ({_first_line(err)})"), None
    rows.append(cuda_row)
    source = "cuda-python"
    if not gpus:
        smi = _safe(probe_nvidia_smi, "nvidia-smi")
        if isinstance(smi, list) and smi:
            gpus, source = smi, "nvidia-smi"
    if gpus:
        for g in gpus:
            mem = f", {g['memory_gib']} GiB" if g.get("memory_gib") is not None else ""
            rows.append(_row(f"gpu {g['index']}", True, f"sm_{str(g['compute_capability']).replace('.', '')}",
                             f"{g['name']}{mem} (via {source})"))
    else:
        rows.append(_row("gpu", False, detail="no NVIDIA GPU visible",
                         hint="TensorRT and the CUDA provider need an NVIDIA GPU with its driver"))
    return {"components": rows, "gpus": gpus or [], "cpu": _safe(cpu_features, "cpu features")}


def cpu_features() -> dict:
    """The CPU section: model, each BF16/INT8-related flag, and the precisions native by flags / for OpenVINO."""
    from der_deploy.backends.openvino.cpu import native_precisions, openvino_capabilities

    info = _cpu()
    caps = None
    if _has_module("openvino"):
        try:
            caps = openvino_capabilities()
        except Exception:  # reported by the openvino row
            caps = None
    return {"model": info.model, "flags": info.features(), "native_by_flags": info.native_by_flags(),
            "openvino_capabilities": caps, "openvino_native": native_precisions(caps, info) if caps is not None else None}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@handle_errors
def main(as_json: bool) -> None:
    """Show which backends, execution providers, GPUs and versions are available, and why any is missing."""
    report = collect()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.markup import escape

    from der_deploy.progress import out_console, table

    rows = [tuple(escape(str(v)) for v in (r["component"], "ok" if r["ok"] else "missing", r["version"], r["detail"], r["hint"]))
            for r in report["components"]]
    t = table("der-doctor", ("component", "status", "version", "detail", "how to get it"), rows)
    for col in t.columns[1:]:
        col.justify = "left"
    out_console.print(t)
    cpu = report.get("cpu")
    if isinstance(cpu, dict) and "flags" in cpu:
        from der_deploy.backends.openvino.cpu import FLAGS

        ov_native = ", ".join(cpu["openvino_native"]) if cpu["openvino_native"] else "OpenVINO not installed"
        rows = [(FLAGS[f], "yes" if v else "no") for f, v in cpu["flags"].items()]
        rows += [("native (CPU flags)", ", ".join(cpu["native_by_flags"])), ("native for OpenVINO", ov_native)]
        t = table(f"CPU features: {escape(cpu['model'])}", ("feature", "present"),
                  [tuple(escape(str(v)) for v in r) for r in rows])
        t.columns[1].justify = "left"
        out_console.print(t)
    sys.stdout.flush()
