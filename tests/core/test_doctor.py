"""der-doctor: runs everywhere, never crashes, explains every missing backend."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from der_deploy.cli import doctor
from der_deploy.backends.openvino.core import shared_core  # one Core per process (see there)

BIN = Path(sys.executable).parent


def _run(*args, extra_path=None):
    env = dict(os.environ, COLUMNS="200", DER_NO_PROGRESS="1")
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run([str(BIN / "der-doctor"), *args], capture_output=True, text=True, env=env, timeout=120)


def _has(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def test_table_runs_and_explains_tensorrt():
    out = _run()
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    text = out.stdout
    assert "onnxruntime" in text and "numpy" in text and "tensorrt" in text and "gpu" in text
    if not _has("tensorrt"):
        assert "not installed" in text and "pip install der-deploy[trt]" in text


def test_json_report_parses_and_matches_this_machine():
    out = _run("--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = {r["component"]: r for r in report["components"]}
    import numpy
    import onnxruntime

    assert rows["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert rows["numpy"]["version"] == numpy.__version__
    assert rows["onnxruntime"]["ok"] and rows["onnxruntime"]["version"] == onnxruntime.__version__
    assert "CPU" in rows["onnxruntime"]["detail"]
    trt = rows["tensorrt"]
    if not _has("tensorrt"):
        assert trt["ok"] is False and trt["detail"] == "not installed" and "der-deploy[trt]" in trt["hint"]
    gpu_rows = [r for name, r in rows.items() if name.startswith("gpu")]
    assert gpu_rows and (report["gpus"] or gpu_rows[0]["detail"] == "no NVIDIA GPU visible")
    for r in report["components"]:
        assert set(r) == {"component", "ok", "version", "detail", "hint"}
        if not r["ok"]:
            assert r["detail"], f"{r['component']} is missing without a reason"


def test_doctor_never_imports_torch():
    code = ("import sys; from der_deploy.cli import doctor; doctor.collect(); "
            "print('torch' in sys.modules, 'tensorrt' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "False"


def test_missing_torch_is_explained(monkeypatch):
    real = doctor._has_module
    monkeypatch.setattr(doctor, "_has_module", lambda name: False if name == "torch" else real(name))
    row = doctor.probe_torch()
    assert row["ok"] is False and "pip install der-deploy[train]" in row["detail"]


def test_a_crashing_probe_is_recorded_not_raised(monkeypatch):
    def boom():
        raise RuntimeError("driver exploded\nsecond line")

    monkeypatch.setattr(doctor, "probe_onnxruntime", boom)
    monkeypatch.setattr(doctor, "probe_cuda_python", boom)
    monkeypatch.setattr(doctor, "probe_nvidia_smi", boom)
    report = doctor.collect()
    rows = {r["component"]: r for r in report["components"]}
    assert rows["onnxruntime"] == {"component": "onnxruntime", "ok": False, "version": "",
                                   "detail": "probe failed (RuntimeError: driver exploded)", "hint": ""}
    assert rows["cuda-python"]["ok"] is False and rows["gpu"]["detail"] == "no NVIDIA GPU visible"


def test_broken_tensorrt_install_is_reported(tmp_path):
    fake = tmp_path / "tensorrt"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise OSError('libnvinfer.so.10: cannot open shared object file')\n")
    out = _run("--json", extra_path=tmp_path)
    assert out.returncode == 0, out.stderr
    row = {r["component"]: r for r in json.loads(out.stdout)["components"]}["tensorrt"]
    assert row["ok"] is False and "cannot be loaded" in row["detail"] and "libnvinfer.so.10" in row["detail"]


@pytest.mark.skipif(not _has("cuda.bindings"), reason="cuda-python not installed here")
def test_gpus_from_cuda_python_when_visible(monkeypatch):
    from der_deploy.backends.tensorrt import cuda

    info = cuda.GpuInfo(0, "NVIDIA H200", "9.0", 150 * 2**30)
    monkeypatch.setattr(cuda, "list_gpus", lambda: [info])
    monkeypatch.setattr(cuda, "versions", lambda: {"driver": "13.0", "runtime": "13.0"})
    report = doctor.collect()
    gpu = {r["component"]: r for r in report["components"]}["gpu 0"]
    assert gpu["ok"] and gpu["version"] == "sm_90" and gpu["detail"] == "NVIDIA H200, 150.0 GiB (via cuda-python)"


def test_too_old_driver_is_explained_with_the_cu12_extra(monkeypatch):
    # cuda-python 13 on a CUDA 12.4 driver: CUDA answers cudaErrorInsufficientDriver (35), which the
    # doctor must not present as "no GPU".
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fakes.cuda import FakeCudart

    from der_deploy.backends.tensorrt import cuda

    real = doctor._has_module
    monkeypatch.setattr(doctor, "_has_module", lambda name: True if name == "cuda.bindings" else real(name))
    monkeypatch.setattr(cuda, "_cudart", FakeCudart(driver=12040, runtime=13000))
    row, gpus = doctor.probe_cuda_python()
    assert gpus == []
    assert "CUDA driver 12.4" in row["detail"] and "CUDA runtime 13.0" in row["detail"]
    assert "the NVIDIA driver is too old for CUDA 13.0" in row["detail"] and "der-deploy[trt-cu12]" in row["detail"]


def test_onnxruntime_tensorrt_provider_needs_1_27_for_tensorrt_11(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "__version__", "1.26.1")
    versions = {"tensorrt-cu13": "11.4.0.106"}
    monkeypatch.setattr(doctor, "_dist_version", lambda *names: next((versions[n] for n in names if n in versions), None))
    row = doctor.probe_onnxruntime()
    assert "TensorRT EP" in row["detail"] and "cannot load TensorRT 11.4.0.106 (needs ONNX Runtime >= 1.27)" in row["detail"]
    assert "onnxruntime-gpu>=1.27" in row["hint"]
    monkeypatch.setattr(ort, "__version__", "1.27.0")
    assert "1.27" not in doctor.probe_onnxruntime()["detail"]
    versions = {"tensorrt-cu12": "10.13.3.9"}  # TensorRT 10 works with older ONNX Runtime
    monkeypatch.setattr(ort, "__version__", "1.22.0")
    assert "1.27" not in doctor.probe_onnxruntime()["detail"]
    # without the CUDA provider, the [gpu] hint carries the version note
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert doctor.probe_onnxruntime()["hint"] == ("GPU providers need onnxruntime-gpu: pip install der-deploy[gpu] "
                                                  "(ONNX Runtime >= 1.27 for TensorRT 11)")


def test_extras_pair_tensorrt_and_cuda_python_majors():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert extras["trt"] == ["tensorrt>=10.0", "cuda-python>=12.6"]
    for major in (12, 13):
        reqs = extras[f"trt-cu{major}"]
        assert any(r.startswith(f"tensorrt-cu{major}") for r in reqs)
        cuda_python = next(r for r in reqs if r.startswith("cuda-python"))
        assert f"<{major + 1}" in cuda_python and f">={major}" in cuda_python


# --- CPU features and OpenVINO (issue 16) ---------------------------------------------------------------------
SPR_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: something else
"""


def test_cpuinfo_flags_decide_native_precisions():
    from der_deploy.backends.openvino.cpu import missing_line, native_precisions, parse_cpuinfo

    spr = parse_cpuinfo(SPR_CPUINFO)
    assert spr.model == "Intel(R) Xeon(R) Platinum 8480+" and spr.has("amx_bf16") and not spr.has("amx_fp16")
    assert spr.native_by_flags() == ["fp32", "bf16", "fp16", "int8"]
    assert spr.speedups() == ["AMX-BF16", "AMX-INT8", "AVX-512 BF16", "AVX-512 VNNI"]
    epyc = parse_cpuinfo("model name\t: AMD EPYC\nflags\t\t: fpu sse avx2\n")
    assert epyc.native_by_flags() == ["fp32"] and epyc.speedups() == []
    # OpenVINO's capabilities, when known, decide (it may run INT8 without VNNI)
    assert native_precisions(["FP32", "INT8", "BIN"], epyc) == ["fp32", "int8"]
    assert native_precisions(None, spr) == spr.native_by_flags()
    line = missing_line("bf16", epyc)
    assert line == ("this CPU (AMD EPYC) has no AMX-BF16 or AVX-512 BF16, so OpenVINO cannot run bf16 natively; "
                    "use --precision fp32, or a CPU with AMX-BF16 or AVX-512 BF16")


def test_cpu_section_matches_proc_cpuinfo():
    out = _run("--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    flags = set()
    if Path("/proc/cpuinfo").exists():
        line = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "flags:")
        flags = set(line.split(":", 1)[1].split())
    cpu = report["cpu"]
    for name in ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f"):
        assert cpu["flags"][name] is (name in flags), name
    rows = {r["component"]: r for r in report["components"]}
    assert rows["cpu"]["ok"] and cpu["model"] in rows["cpu"]["detail"]
    assert ("bf16" in cpu["native_by_flags"]) is bool(flags & {"amx_bf16", "avx512_bf16"})
    if _has("openvino"):
        import openvino as ov

        assert rows["openvino"]["ok"] and rows["openvino"]["version"] == ov.__version__.split("-")[0]
        caps = [str(c) for c in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
        assert cpu["openvino_capabilities"] == caps
        assert ("bf16" in cpu["openvino_native"]) is ("BF16" in caps)
    text = _run().stdout
    for words in ("CPU features", "AMX-BF16", "AVX-512 BF16", "AVX-512 VNNI", "AVX-VNNI", "native for OpenVINO"):
        assert words in text, words


def test_openvino_hint_when_the_cpu_has_speedups(monkeypatch):
    from der_deploy.backends.openvino import cpu

    spr = cpu.parse_cpuinfo(SPR_CPUINFO)
    monkeypatch.setattr(doctor, "_cpu", lambda: spr)
    real = doctor._has_module
    monkeypatch.setattr(doctor, "_has_module", lambda name: False if name == "openvino" else real(name))
    row = doctor.probe_openvino()
    assert row["ok"] is False and row["detail"] == "not installed"
    assert "pip install 'der-deploy[openvino]'" in row["hint"] and "AMX-BF16" in row["hint"]
    assert "speed-ups: AMX-BF16, AMX-INT8, AVX-512 BF16, AVX-512 VNNI" in doctor.probe_cpu()["detail"]
    # installed but not what --backend auto uses: say how to use it
    monkeypatch.setattr(doctor, "_has_module", real)
    if not _has("openvino"):
        return
    monkeypatch.setattr(cpu, "openvino_capabilities", lambda core=None: ["FP32", "BF16", "INT8"])
    row = doctor.probe_openvino()
    assert row["ok"] and "bf16" in row["detail"]
    assert "der-infer --backend openvino --precision bf16" in row["hint"] and "auto runs ONNX Runtime" in row["hint"]
    # an AVX2-only CPU: nothing to gain, no hint
    monkeypatch.setattr(doctor, "_cpu", lambda: cpu.parse_cpuinfo("model name: AMD EPYC\nflags: avx2\n"))
    monkeypatch.setattr(cpu, "openvino_capabilities", lambda core=None: ["FP32", "INT8"])
    assert doctor.probe_openvino()["hint"] == ""
    assert "none (no AMX, AVX-512 BF16 or VNNI)" in doctor.probe_cpu()["detail"]
