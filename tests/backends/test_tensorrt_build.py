"""build_engine / tensorrt_available without a GPU: argument and profile validation, the precision decision
table, and the builder control flow against the FAKE tensorrt module (tests/fakes/tensorrt.py) that records
calls, passed through the ``tensorrt=`` loader argument; one test covers the real import.

The fake has no EXPLICIT_BATCH, no build_engine and no max_workspace_size, so touching any of them fails.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from der_deploy.artifact.card import ONNX_METADATA_KEY, ModelCard
from der_deploy.errors import BackendUnavailable, ExportError
from der_deploy.backends.tensorrt import builder as trt_build
from der_deploy.artifact.profile import BatchProfile, parse_profile
from der_deploy.fileio import sha256_file
from der_deploy.backends.tensorrt import cuda as cuda_helpers
from der_deploy.artifact.sidecar import read_sidecar

from fakes.cuda import FakeCudart
from fakes.tensorrt import PLAN_MAGIC, calls as names, fake_tensorrt, reference

ROOT = Path(__file__).resolve().parents[2]
CARD = ModelCard(classes=["a", "b", "c"], arch="resnet18", input_size=(8, 8))


# --- tiny ONNX files that follow der-export's I/O contract -------------------------------------
def make_onnx(path: Path, *, kind="fp32", batch="N", size=(8, 8), card=CARD) -> Path:
    """images (batch, 3, H, W) -> GlobalAveragePool -> Flatten -> logits (batch, 3)."""
    nodes, inits = [], []
    src = "images"
    if kind == "fp16":
        nodes += [helper.make_node("Cast", ["images"], ["x16"], to=TensorProto.FLOAT16),
                  helper.make_node("Cast", ["x16"], ["x32"], to=TensorProto.FLOAT)]
        src = "x32"
    elif kind in ("s8s8", "u8s8", "asym"):
        zp_type = TensorProto.UINT8 if kind == "u8s8" else TensorProto.INT8
        zp_val = 3 if kind == "asym" else 0
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
                  helper.make_tensor("zp", zp_type, [], [zp_val])]
        nodes += [helper.make_node("QuantizeLinear", ["images", "scale", "zp"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["dq"])]
        src = "dq"
    nodes += [helper.make_node("GlobalAveragePool", [src], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, *size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if card is not None:
        helper.set_model_props(model, {ONNX_METADATA_KEY: card.to_json()})
    onnx.save(model, str(path))
    return path


# --- fakes (tests/fakes/), handed over through build_engine(..., tensorrt=trt) ----------------------------
def build(trt, onnx_path, plan_path, **kw):
    return trt_build.build_engine(onnx_path, plan_path, tensorrt=trt, **kw)


@pytest.fixture
def gpu(monkeypatch):
    fake = FakeCudart(gpus=[("Fake GPU", 8, 9)])
    monkeypatch.setattr(cuda_helpers, "_cudart", fake)
    return fake


# --- tensorrt_available ----------------------------------------------------------------------------
def test_tensorrt_missing_gives_pip_hint(monkeypatch):
    # The one test of the real import path: no tensorrt= given, and import tensorrt fails.
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable) as info:
        trt_build.tensorrt_available()
    assert str(info.value) == ("TensorRT is not installed; install it with `pip install der-deploy[trt]` on a machine "
                               "with an NVIDIA GPU")


def test_tensorrt_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cuda_helpers, "_cudart", FakeCudart(gpus=[]))
    with pytest.raises(BackendUnavailable, match="TensorRT 10.9.0.34 is installed but no CUDA GPU is visible .*cudaErrorNoDevice"):
        trt_build.tensorrt_available(fake_tensorrt())


def test_tensorrt_available_takes_a_module_or_a_loader(gpu):
    trt = fake_tensorrt()
    assert trt_build.tensorrt_available(trt) is trt
    assert trt_build.tensorrt_available(lambda: trt) is trt


# --- pure helpers ------------------------------------------------------------------------------
def test_profile_shapes_from_batch_profile():
    shapes = trt_build.profile_shapes("images", (-1, 3, 8, 8), BatchProfile(1, 4, 16), (8, 8))
    assert shapes == ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    # dynamic H, W are filled from the card
    assert trt_build.profile_shapes("images", (-1, 3, -1, -1), parse_profile("2:8"), (8, 6))[2] == (8, 3, 8, 6)


def test_profile_shapes_rejects_what_cannot_fit():
    with pytest.raises(ExportError, match="fixed batch of 1, so --batch 1:8:32 cannot apply; use --batch 1"):
        trt_build.profile_shapes("images", (1, 3, 8, 8), BatchProfile(1, 8, 32), (8, 8))
    assert trt_build.profile_shapes("images", (4, 3, 8, 8), parse_profile("4:4:4"), (8, 8))[0] == (4, 3, 8, 8)
    with pytest.raises(ExportError, match="is 8x8 in the ONNX but the model card says 16x16"):
        trt_build.profile_shapes("images", (-1, 3, 8, 8), BatchProfile(1, 1, 2), (16, 16))
    with pytest.raises(ExportError, match="dynamic dimensions"):
        trt_build.profile_shapes("mask", (-1, -1), BatchProfile(1, 1, 2), None)


def test_inspect_onnx_flavours(tmp_path):
    fp32 = trt_build.inspect_onnx(make_onnx(tmp_path / "a.onnx"))
    assert not fp32.fp16 and not fp32.qdq and fp32.inputs == {"images": [-1, 3, 8, 8]} and fp32.card == CARD
    assert trt_build.inspect_onnx(make_onnx(tmp_path / "b.onnx", kind="fp16")).fp16
    s8 = trt_build.inspect_onnx(make_onnx(tmp_path / "c.onnx", kind="s8s8"))
    assert s8.qdq and not s8.unsigned_qdq and not s8.asymmetric_qdq
    assert trt_build.inspect_onnx(make_onnx(tmp_path / "d.onnx", kind="u8s8")).unsigned_qdq
    assert trt_build.inspect_onnx(make_onnx(tmp_path / "e.onnx", kind="asym")).asymmetric_qdq
    with pytest.raises(ExportError, match="no such ONNX file"):
        trt_build.inspect_onnx(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ExportError, match="not a readable ONNX"):
        trt_build.inspect_onnx(tmp_path / "bad.onnx")


@pytest.mark.parametrize("major, precision, kind, expect", [
    (10, "fp16", "fp32", trt_build.NetworkPlan(False, ("FP16",))),
    (10, "fp16", "fp16", trt_build.NetworkPlan(True)),
    (11, "fp16", "fp16", trt_build.NetworkPlan(True)),
    (10, "fp32", "fp32", trt_build.NetworkPlan(True, clear_flags=("TF32",))),
    (11, "fp32", "fp32", trt_build.NetworkPlan(True, clear_flags=("TF32",))),
    (10, "int8", "s8s8", trt_build.NetworkPlan(True)),
    (11, "int8", "s8s8", trt_build.NetworkPlan(True)),
    (11, "fp16", "fp32", "TensorRT 11 builds FP16 engines only from an FP16 ONNX"),
    (10, "fp32", "fp16", "contains FP16 tensors"),
    (10, "fp16", "s8s8", "quantized .*--int8"),
    (11, "int8", "fp32", "no Q/DQ nodes"),
    (10, "int8", "u8s8", "U8S8 .*S8S8"),
    (11, "int8", "asym", "non-zero int8 zero points"),
    (10, "bf16", "fp32", "unknown TensorRT precision"),
])
def test_decision_table(tmp_path, major, precision, kind, expect):
    info = trt_build.inspect_onnx(make_onnx(tmp_path / f"{kind}.onnx", kind=kind))
    if isinstance(expect, str):
        with pytest.raises(ExportError, match=expect):
            trt_build.choose_network(major, precision, info)
    else:
        assert trt_build.choose_network(major, precision, info) == expect


# --- validation before any TensorRT work -------------------------------------------------------
def test_argument_errors_come_before_tensorrt(tmp_path):
    def no_tensorrt():  # what the real loader raises without TensorRT; reached only after every check
        raise BackendUnavailable(trt_build.TRT_MISSING)

    good = make_onnx(tmp_path / "m.onnx")
    build = lambda *a, **k: trt_build.build_engine(*a, tensorrt=no_tensorrt, **k)  # noqa: E731
    plan = tmp_path / "der.plan"
    with pytest.raises(ExportError, match="fixed batch of 1"):
        build(make_onnx(tmp_path / "static.onnx", batch=1), plan, profile="1:8:32")
    with pytest.raises(ExportError, match="8x8 in the ONNX but the model card says 16x16"):
        build(good, plan, profile="4", card=CARD.replace(input_size=(16, 16)))
    with pytest.raises(ExportError, match="no der-deploy model card"):
        build(make_onnx(tmp_path / "nocard.onnx", card=None), plan, profile="4")
    with pytest.raises(ExportError, match="workspace"):
        build(good, plan, profile="4", workspace=0)
    with pytest.raises(ExportError, match="unknown TensorRT precision"):
        build(good, plan, profile="4", precision="tf32")
    with pytest.raises(ValueError, match="MIN <= OPT <= MAX"):
        build(good, plan, profile="8:4:2")
    with pytest.raises(BackendUnavailable, match="pip install der-deploy\\[trt\\]"):
        build(good, plan, profile="4")
    assert not plan.exists()


# --- the build itself, against the fake ----------------------------------------------------------
def test_trt10_fp16_from_fp32_onnx(tmp_path, gpu):
    trt = fake_tensorrt()
    onnx_path = make_onnx(tmp_path / "model.onnx")
    plan = build(trt, onnx_path, tmp_path / "out" / "der.plan", precision="fp16", profile=BatchProfile(1, 4, 16),
                 workspace=2)
    assert plan == tmp_path / "out" / "der.plan"
    assert names(trt, "create_network") == [("create_network", 0)]  # weakly typed + FP16 flag
    assert names(trt, "set_flag") == [("set_flag", "FP16")]
    assert names(trt, "set_memory_pool_limit") == [("set_memory_pool_limit", "WORKSPACE", 2 << 30)]
    assert names(trt, "set_shape") == [("set_shape", "images", (1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))]
    order = [c[0] for c in trt.calls]
    assert order.index("set_shape") < order.index("add_optimization_profile") < order.index("build_serialized_network")
    assert names(trt, "parse_from_file") == [("parse_from_file", str(onnx_path))]
    data = plan.read_bytes()
    assert data.startswith(PLAN_MAGIC)  # plain plan bytes as TensorRT serialized them, nothing prepended
    sc = read_sidecar(plan)
    assert (sc.precision, sc.tensorrt_version, sc.gpu_name, sc.compute_capability) == ("fp16", "10.9.0.34", "Fake GPU", "8.9")
    assert sc.card == CARD and sc.onnx_name == "model.onnx" and sc.onnx_sha256 == sha256_file(onnx_path)
    assert sc.plan_sha256 == hashlib.sha256(data).hexdigest()
    assert sc.profiles == [{"input": "images", "min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [16, 3, 8, 8]}]
    assert sc.build_seconds >= 0 and sc.built_at.endswith("+00:00") and sc.der_deploy_version
    assert sorted(p.name for p in plan.parent.iterdir()) == ["der.plan", "der.plan.json"]


def test_trt10_fp16_onnx_is_strongly_typed(tmp_path, gpu):
    trt = fake_tensorrt()
    build(trt, make_onnx(tmp_path / "m.fp16.onnx", kind="fp16"), tmp_path / "der.plan", profile="2")
    assert names(trt, "create_network") == [("create_network", 1 << 1)]
    assert names(trt, "set_flag") == [] and names(trt, "set_memory_pool_limit") == []


def test_trt11_never_sets_precision_flags(tmp_path, gpu):
    trt = fake_tensorrt(version="11.4.1")
    build(trt, make_onnx(tmp_path / "m.fp16.onnx", kind="fp16"), tmp_path / "der.plan", profile="1:2:4")
    assert names(trt, "create_network") == [("create_network", 0)]  # always strongly typed; deprecated flag unused
    assert names(trt, "set_flag") == []
    with pytest.raises(ExportError, match="pass the FP16 ONNX"):
        build(trt, make_onnx(tmp_path / "m.onnx"), tmp_path / "der2.plan", profile="4")
    assert not (tmp_path / "der2.plan").exists()


def test_fp32_clears_tf32_and_int8_uses_qdq(tmp_path, gpu):
    trt = fake_tensorrt()
    build(trt, make_onnx(tmp_path / "m.onnx"), tmp_path / "a.plan", precision="fp32", profile="4")
    assert names(trt, "clear_flag") == [("clear_flag", "TF32")] and names(trt, "set_flag") == []
    trt.calls.clear()
    plan = build(trt, make_onnx(tmp_path / "q.onnx", kind="s8s8"), tmp_path / "b.plan", precision="int8", profile="4")
    assert names(trt, "create_network") == [("create_network", 2)] and names(trt, "set_flag") == []
    assert read_sidecar(plan).precision == "int8"
    with pytest.raises(ExportError, match="U8S8"):
        build(trt, make_onnx(tmp_path / "u.onnx", kind="u8s8"), tmp_path / "c.plan", precision="int8", profile="4")


def test_parser_errors_are_all_listed(tmp_path, gpu):
    trt = fake_tensorrt(parse_errors=2)
    with pytest.raises(ExportError) as info:
        build(trt, make_onnx(tmp_path / "m.onnx"), tmp_path / "der.plan", profile="4")
    msg = str(info.value)
    assert "(2 error(s))" in msg and "\n" not in msg
    for i in (0, 1):
        assert f"[{i + 1}] unsupported operator number {i} (node {10 + i}, /backbone/op{i}, op FancyOp, code ErrorCode.UNSUPPORTED_NODE)" in msg
    assert not (tmp_path / "der.plan").exists()


def test_failed_build_quotes_logger_and_writes_nothing(tmp_path, gpu):
    trt = fake_tensorrt(build_fails=True)
    with pytest.raises(ExportError, match="could not build der.plan from m.onnx: Error Code 4: Internal Error"):
        build(trt, make_onnx(tmp_path / "m.onnx"), tmp_path / "der.plan", profile="4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_timing_cache_is_loaded_and_saved(tmp_path, gpu, capsys):
    trt = fake_tensorrt()
    onnx_path, cache = make_onnx(tmp_path / "m.onnx"), tmp_path / "timing.cache"
    build(trt, onnx_path, tmp_path / "a.plan", profile="4", timing_cache=cache)
    assert names(trt, "create_timing_cache") == [("create_timing_cache", b"")]  # no file yet: fresh cache
    assert names(trt, "set_timing_cache") == [("set_timing_cache", b"", False)]
    assert cache.read_bytes() == b"CACHE-OK:7"  # serialized after the build
    trt.calls.clear()
    build(trt, onnx_path, tmp_path / "b.plan", profile="4", timing_cache=cache)
    assert names(trt, "create_timing_cache") == [("create_timing_cache", b"CACHE-OK:7")]
    # a cache from another GPU / TensorRT is rejected by TensorRT: warn, start fresh, overwrite
    cache.write_bytes(b"STALE")
    trt.calls.clear()
    build(trt, onnx_path, tmp_path / "c.plan", profile="4", timing_cache=cache)
    assert [c[1] for c in names(trt, "create_timing_cache")] == [b"STALE", b""]
    assert "timing cache" in capsys.readouterr().err and cache.read_bytes().startswith(b"CACHE-OK")



def test_what_the_fake_builds_the_runner_runs(tmp_path, gpu):
    # One fake for both sides: the plan build_engine writes loads in TrtRunner and runs on the same fake GPU.
    from der_deploy.backends.tensorrt.runner import TrtRunner

    trt = fake_tensorrt(cudart=gpu)
    plan = build(trt, make_onnx(tmp_path / "m.fp16.onnx", kind="fp16"), tmp_path / "der.plan", profile="2:2:4")
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    with TrtRunner(plan, tensorrt=lambda: trt) as runner:
        assert (runner.profile_min_batch, runner.max_batch) == (2, 4)
        assert [m.name for m in runner.get_output_metadata()] == ["logits"]
        out = runner.infer({"images": x})
    assert trt.engines[-1].contexts[-1].executed == [4, 2]  # 4, then 1 padded up to the profile minimum 2
    np.testing.assert_allclose(out["logits"], reference(x.astype(np.float64))["logits"], rtol=1e-5)
    assert gpu.device == {} and gpu.host == {}


# --- forbidden legacy APIs ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ["backends/tensorrt/builder.py", "backends/tensorrt/runner.py", "backends/tensorrt/cuda.py"])
def test_no_legacy_tensorrt_apis(path):
    text = (ROOT / path).read_text()
    for banned in ("EXPLICIT_BATCH", "max_workspace_size", "get_binding_", "execute_async_v2", "pycuda",
                   "binding_is_input", "execute_v2"):
        assert banned not in text, f"{path} mentions {banned}"
    # build_engine( may only be our own function, never a method on the builder object
    assert not re.search(r"\.build_engine\(", text), f"{path} calls builder.build_engine"


# --- CLI: der-export --trt without TensorRT ---------------------------------------------------------
def test_der_export_trt_without_tensorrt_is_one_line(tmp_path):
    if not (ROOT / "der_deploy" / "cli" / "export.py").is_file():
        pytest.skip("der_deploy/cli/export.py (der-export) has not landed yet")
    onnx_path = make_onnx(tmp_path / "x.onnx")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "tensorrt.py").write_text("raise ImportError('blocked for this test')\n")  # simulate "not installed"
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(blocker), "DER_NO_PROGRESS": "1", "HOME": str(tmp_path)}
    out = subprocess.run([str(Path(sys.executable).parent / "der-export"), str(onnx_path), "--trt", "-o", str(tmp_path / "der.plan")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0
    err = out.stderr.strip()
    assert "Traceback" not in err
    assert err.splitlines()[-1] == ("error: TensorRT is not installed; install it with `pip install der-deploy[trt]` on a "
                                    "machine with an NVIDIA GPU"), err
    assert not (tmp_path / "der.plan").exists()


# --- what the real pybind11 bindings do on failure (issue 11 section 1) ---------------------------------
def test_builder_constructor_failure_on_a_too_old_driver(tmp_path, monkeypatch):
    # cuda-python 12 sees the CUDA 12.8 driver fine, but the TensorRT wheel is the CUDA 13 build: trt.Builder
    # logs "CUDA initialization failure with error: 35" and pybind11 raises TypeError (never returns None).
    cudart = FakeCudart(gpus=[("Fake GPU", 8, 9)], driver=12080, runtime=12080)
    monkeypatch.setattr(cuda_helpers, "_cudart", cudart)
    trt = fake_tensorrt(cudart=cudart, cuda_major=13)
    with pytest.raises(BackendUnavailable) as info:
        build(trt, make_onnx(tmp_path / "m.onnx"), tmp_path / "der.plan", profile="4")
    msg = str(info.value)
    assert "could not create a builder" in msg and "CUDA initialization failure with error: 35" in msg
    assert "driver is too old" in msg and "pip install der-deploy[trt-cu12]" in msg and "nullptr" not in msg
    assert not (tmp_path / "der.plan").exists()


def test_parser_constructor_failure_is_an_export_error(tmp_path, gpu):
    trt = fake_tensorrt(parser_nullptr=True)
    with pytest.raises(ExportError, match="could not create an ONNX parser \\(Could not create the ONNX parser"):
        build(trt, make_onnx(tmp_path / "m.onnx"), tmp_path / "der.plan", profile="4")


def test_inconsistent_profile_shapes_are_an_export_error(tmp_path, monkeypatch, gpu):
    trt = fake_tensorrt()
    real = trt_build.profile_shapes
    monkeypatch.setattr(trt_build, "profile_shapes",  # what TensorRT refuses: opt above max
                        lambda *a, **k: (lambda s: (s[0], s[2], s[1]))(real(*a, **k)))
    with pytest.raises(ExportError) as info:
        build(trt, make_onnx(tmp_path / "m.onnx"), tmp_path / "der.plan", profile="1:2:4")
    msg = str(info.value)
    assert "rejected the optimization profile for input 'images'" in msg and "inconsistent with other shapes" in msg
    assert "(1, 3, 8, 8)" in msg and not (tmp_path / "der.plan").exists()


def test_trt11_strongly_typed_flag_is_zero_and_unused(tmp_path, gpu):
    trt = fake_tensorrt(version="11.4.0.106")
    assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0  # renumbered and deprecated in TensorRT 11
    build(trt, make_onnx(tmp_path / "q.onnx", kind="s8s8"), tmp_path / "der.plan", precision="int8", profile="4")
    assert names(trt, "create_network") == [("create_network", 0)]
