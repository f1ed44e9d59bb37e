"""TrtRunner control flow with FAKE tensorrt and cuda-python modules (no GPU here), plus a real-GPU parity test.

The fakes (tests/fakes/) are small and honest: "device" memory is real host memory, copies really move bytes,
and the fake engine really computes its outputs from what was copied in. So these tests check our buffer
sizing, addresses, copies, chunking, padding and error handling -- not TensorRT. The fake tensorrt is handed to
TrtRunner through its ``tensorrt=`` loader argument; one test covers the real import.
"""
from __future__ import annotations

import hashlib
import json
import sys
import threading

import numpy as np
import pytest

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import BackendUnavailable, EngineError
from der_deploy.backends.tensorrt import cuda as cuda_helpers
from der_deploy.backends.tensorrt.runner import TrtRunner

from fakes.cuda import FakeCudart
from fakes.tensorrt import TRT_VERSION, calls, fake_tensorrt, make_fake_plan, reference

C, H, W = 3, 4, 4
CARD = ModelCard(classes=["a", "b", "c"], arch="resnet18", input_size=(H, W))


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def fakes(monkeypatch):
    cudart = FakeCudart()
    monkeypatch.setattr(cuda_helpers, "_cudart", cudart)
    return fake_tensorrt(cudart=cudart), cudart


def write_plan(tmp_path, *, lo=1, opt=2, hi=4, trt_version=TRT_VERSION, gpu="Fake GPU A", cc="8.6", **switches):
    return make_fake_plan(tmp_path, CARD, lo=lo, opt=opt, hi=hi, onnx_name="model.fp16.onnx",
                          tensorrt_version=trt_version, gpu_name=gpu, compute_capability=cc, **switches)


def images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, C, H, W)).astype(np.float32)


# --- tests -------------------------------------------------------------------------------------
def test_activate_without_tensorrt_is_backend_unavailable(tmp_path, monkeypatch):
    # The one test of the real import path: no tensorrt= given, and import tensorrt fails.
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    runner = TrtRunner(write_plan(tmp_path))
    with pytest.raises(BackendUnavailable) as info:
        runner.activate()
    assert str(info.value) == ("TensorRT is not installed; install it with `pip install der-deploy[trt]` on a machine "
                               "with an NVIDIA GPU")
    assert not runner.is_active


def test_tensorrt_loader_is_called_at_activation(tmp_path, fakes):
    trt, loads = fakes[0], []
    runner = TrtRunner(write_plan(tmp_path), tensorrt=lambda: loads.append(1) or trt)
    assert loads == []  # constructing a runner loads nothing
    with runner:
        assert loads == [1] and calls(trt, "Runtime") == [("Runtime",)]

    def refuse():
        raise BackendUnavailable("TensorRT is not usable here")

    runner = TrtRunner(write_plan(tmp_path), tensorrt=refuse)
    with pytest.raises(BackendUnavailable, match="not usable here"):
        runner.activate()
    assert not runner.is_active


def test_activate_without_gpu_is_backend_unavailable(tmp_path, fakes):
    fakes[1].gpus = []
    with pytest.raises(BackendUnavailable, match="no CUDA GPU is visible.*cudaErrorNoDevice"):
        TrtRunner(write_plan(tmp_path), tensorrt=fakes[0]).activate()


def test_batch_of_ten_runs_as_4_4_2_and_matches_reference(tmp_path, fakes):
    trt, cudart = fakes
    x = images(10)
    with TrtRunner(write_plan(tmp_path, lo=1, opt=2, hi=4), tensorrt=trt) as runner:
        assert runner.max_batch == 4 and runner.min_batch == 1
        out = runner.infer({"images": x})
        ctx = trt.engines[-1].contexts[-1]
        assert ctx.executed == [4, 4, 2]
        shapes = [c[2][0] for c in calls(trt, "set_input_shape")]
        assert shapes == [4, 4, 4, 2]  # sizing at activation, then one per chunk
        assert set(ctx.addresses) == {"images", "logits", "scores"}
        assert len(set(ctx.addresses.values())) == 3 and all(a in cudart.device for a in ctx.addresses.values())
        # every byte in and out went through the pinned buffers: 3 inputs + 6 outputs copies
        assert [k for k, _ in cudart.copies].count("h2d") == 3 and [k for k, _ in cudart.copies].count("d2h") == 6
        assert ("h2d", 2 * C * H * W * 4) in cudart.copies  # the last chunk copies only 2 images
        assert len(cudart.device) == 3 and len(cudart.host) == 3
        meta = runner.get_input_metadata()
        assert meta[0].name == "images" and meta[0].shape == (None, C, H, W) and meta[0].dtype == np.float32
    ref = reference(x.astype(np.float64))
    for name in ("logits", "scores"):
        assert out[name].shape == (10, C) and out[name].dtype == np.float32
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-6)
    # deactivate freed everything, and a second deactivate is harmless
    assert cudart.device == {} and cudart.host == {} and cudart.streams == set()
    runner.deactivate()
    with pytest.raises(EngineError, match="not active"):
        runner.infer({"images": x})


def test_outputs_do_not_alias_the_pinned_buffers(tmp_path, fakes):
    with TrtRunner(write_plan(tmp_path), tensorrt=fakes[0]) as runner:
        first = runner.infer({"images": images(2, seed=1)})["logits"]
        kept = first.copy()
        runner.infer({"images": images(2, seed=2)})
        np.testing.assert_array_equal(first, kept)


def test_small_batch_is_padded_to_profile_min_and_trimmed(tmp_path, fakes):
    trt, _ = fakes
    x = images(2)
    with TrtRunner(write_plan(tmp_path, lo=3, opt=3, hi=4), tensorrt=trt) as runner:
        assert runner.profile_min_batch == 3 and runner.min_batch == 1
        out = runner.infer({"images": x})
        assert trt.engines[-1].contexts[-1].executed == [3]
    assert out["scores"].shape == (2, C)
    np.testing.assert_allclose(out["scores"], reference(x.astype(np.float64))["scores"], rtol=1e-5)


def test_rejected_input_shape_is_an_engine_error(tmp_path, fakes):
    trt, cudart = fakes
    with TrtRunner(write_plan(tmp_path), tensorrt=trt) as runner:
        trt.engines[-1].spec["reject_shapes"] = True
        with pytest.raises(EngineError, match="rejected input shape .*does not satisfy any optimization profiles"):
            runner.infer({"images": images(2)})
    assert cudart.device == {}


def test_failed_execute_is_an_engine_error(tmp_path, fakes):
    with TrtRunner(write_plan(tmp_path, fail_execute=True), tensorrt=fakes[0]) as runner:
        with pytest.raises(EngineError, match="inference failed.*illegal memory access"):
            runner.infer({"images": images(1)})


def test_feed_validation(tmp_path, fakes):
    with TrtRunner(write_plan(tmp_path), tensorrt=fakes[0]) as runner:
        with pytest.raises(EngineError, match="expects \\['images'\\]"):
            runner.infer({"x": images(1)})
        with pytest.raises(EngineError, match="shape \\(1, 3, 5, 5\\)"):
            runner.infer({"images": np.zeros((1, C, 5, 5), np.float32)})
        with pytest.raises(EngineError, match="dtype int64"):
            runner.infer({"images": np.zeros((1, C, H, W), np.int64)})
        with pytest.raises(EngineError, match="empty batch"):
            runner.infer({"images": np.zeros((0, C, H, W), np.float32)})
        x64 = images(1).astype(np.float64)  # float64 -> float32 is a same-kind cast
        np.testing.assert_allclose(runner.infer({"images": x64})["logits"], reference(x64)["logits"], rtol=1e-5)


def test_fp16_io_engine_takes_float32_images(tmp_path, fakes):
    x = images(3)
    with TrtRunner(write_plan(tmp_path, fp16_io=True), tensorrt=fakes[0]) as runner:
        out = runner.infer({"images": x})
    assert out["logits"].dtype == np.float16
    np.testing.assert_allclose(out["logits"], reference(x.astype(np.float16).astype(np.float64))["logits"], atol=2e-2)


def test_io_type_without_numpy_equivalent_is_an_engine_error(tmp_path, fakes):
    with pytest.raises(EngineError, match="'images' has type DataType.BF16 with no numpy equivalent"):
        TrtRunner(write_plan(tmp_path, bf16_io=True), tensorrt=fakes[0]).activate()
    assert fakes[1].device == {} and fakes[1].streams == set()


def test_tensorrt_version_mismatch_refused_before_deserialize(tmp_path, fakes):
    trt, cudart = fakes
    with pytest.raises(EngineError) as info:
        TrtRunner(write_plan(tmp_path, trt_version="10.8.0.43"), tensorrt=trt).activate()
    msg = str(info.value)
    assert "built with TensorRT 10.8.0.43 on Fake GPU A (sm_86)" in msg and f"TensorRT {TRT_VERSION}" in msg
    assert "der-export model.fp16.onnx --trt" in msg
    assert trt.calls == [] and cudart.device == {}  # no Runtime, no deserialize


def test_compute_capability_mismatch_refused(tmp_path, fakes):
    fakes[1].gpus = [("Fake GPU H", 9, 0)]
    with pytest.raises(EngineError, match="sm_86.*Fake GPU H \\(sm_90\\)"):
        TrtRunner(write_plan(tmp_path), tensorrt=fakes[0]).activate()


def test_same_cc_other_gpu_model_warns_and_runs(tmp_path, fakes):
    fakes[1].gpus = [("Fake GPU B", 8, 6)]
    with TrtRunner(write_plan(tmp_path), tensorrt=fakes[0]) as runner:
        assert len(runner.warnings) == 1 and "Fake GPU B" in runner.warnings[0]
        runner.infer({"images": images(1)})


def test_missing_sidecar_and_replaced_plan(tmp_path, fakes):
    plan = write_plan(tmp_path)
    plan.write_bytes(plan.read_bytes() + b" ")  # plan changed after the sidecar was written
    with pytest.raises(EngineError, match="does not match its sidecar"):
        TrtRunner(plan, tensorrt=fakes[0]).activate()
    (tmp_path / "der.plan.json").unlink()
    with pytest.raises(EngineError, match="der.plan.json: missing"):
        TrtRunner(plan, tensorrt=fakes[0]).activate()
    with pytest.raises(EngineError, match="no such TensorRT plan"):
        TrtRunner(tmp_path / "nope.plan", tensorrt=fakes[0]).activate()


def test_undeserializable_plan_quotes_tensorrt(tmp_path, fakes):
    plan = write_plan(tmp_path)
    data = b"garbage"
    plan.write_bytes(data)
    sc = json.loads((tmp_path / "der.plan.json").read_text())
    sc["plan_sha256"] = hashlib.sha256(data).hexdigest()
    (tmp_path / "der.plan.json").write_text(json.dumps(sc))
    with pytest.raises(EngineError, match="cannot deserialize.*magicTagRead"):
        TrtRunner(plan, tensorrt=fakes[0]).activate()
    assert fakes[1].device == {} and fakes[1].streams == set()


def test_open_runner_and_read_card_use_the_sidecar(tmp_path, fakes):
    from der_deploy.artifact import read_card
    from der_deploy.backends import open_runner

    plan = write_plan(tmp_path)
    assert read_card(plan).classes == ["a", "b", "c"]
    runner = open_runner(plan)
    assert isinstance(runner, TrtRunner) and not runner.is_active


# --- real TensorRT (skipped without tensorrt + a CUDA GPU) ---------------------------------------
def _real_trt_ready() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception as err:
        return f"tensorrt not importable ({type(err).__name__})"
    try:
        if cuda_helpers.gpu_count() == 0:
            return "no CUDA GPU visible"
    except Exception as err:
        return f"cuda-python unusable ({err})"
    return None


_SKIP = _real_trt_ready()


@pytest.mark.tensorrt
@pytest.mark.slow
@pytest.mark.skipif(_SKIP is not None, reason=f"needs tensorrt + an NVIDIA GPU: {_SKIP}")
def test_real_fp16_plan_matches_pytorch(tiny_onnx, trained_ckpt, synth_voc, tmp_path):
    from der_deploy.compare import compare_outputs
    from der_deploy.export.precision import convert_fp16
    from der_deploy.backends.tensorrt.builder import build_engine
    from der_deploy.export.verify import TOLERANCES, generated_inputs, reference_outputs
    from der_deploy.artifact.sidecar import read_sidecar

    fp16 = convert_fp16(tiny_onnx, tmp_path / "tiny.fp16.onnx")
    plan = build_engine(fp16, tmp_path / "der.plan", precision="fp16", profile="1:4:8", workspace=1.0,
                        timing_cache=tmp_path / "timing.cache")
    sc = read_sidecar(plan)
    assert sc.precision == "fp16" and sc.profile_for("images")["max"][0] == 8
    x = generated_inputs(sc.card, count=11)  # 11 > max 8: exercises chunking on the GPU
    ref = reference_outputs(trained_ckpt, x, cadm=True)
    with TrtRunner(plan) as runner:
        out = runner.infer({"images": x})
    out = {k: np.asarray(v, np.float32) for k, v in out.items()}
    result = compare_outputs(ref, out, **TOLERANCES["fp16"], title="TensorRT FP16 vs PyTorch")
    assert result.passed, result.summary()
    # The parity gate users run: der-eval on the plan with the checkpoint as reference, FP16 budget.
    from der_deploy.tools.evaluate import DEFAULT_BUDGETS, evaluate

    report = evaluate(plan, synth_voc, split="test", reference=trained_ckpt)
    assert report.precision == "fp16" and report.parity.budget_pt == DEFAULT_BUDGETS["fp16"]
    assert report.parity.passed, report.parity


def test_one_capturing_logger_per_process(fakes):
    from der_deploy.backends.tensorrt.runner import make_logger

    trt = fakes[0]
    first = make_logger(trt)
    first.log(trt.ILogger.Severity.ERROR, "boom\nline two")
    first.log(trt.ILogger.Severity.WARNING, "careful")
    first.log(trt.ILogger.Severity.INFO, "chatter")
    assert first.errors == ["boom\nline two"] and first.warnings == ["careful"]
    assert first.summary() == "boom line two"
    again = make_logger(trt)  # TensorRT keeps the first logger it sees: reuse it, cleared
    assert again is first and again.errors == [] and again.summary() == "TensorRT reported no error"


# --- what real cuda-python / TensorRT do on a machine whose driver does not fit (issue 11 section 1) --------
def _use(monkeypatch, cudart, **trt_kw):
    monkeypatch.setattr(cuda_helpers, "_cudart", cudart)
    return fake_tensorrt(cudart=cudart, **trt_kw)


def test_old_cuda_python_without_driver_is_backend_unavailable(tmp_path, monkeypatch):
    # cuda-python 12.6.0-12.8.x raise RuntimeError("Failed to dlopen libcuda.so.1") instead of returning an error
    trt = _use(monkeypatch, FakeCudart(driver="dlopen", runtime=12060))
    with pytest.raises(BackendUnavailable) as info:
        TrtRunner(write_plan(tmp_path), tensorrt=trt).activate()
    msg = str(info.value)
    assert "no NVIDIA driver" in msg and "Failed to dlopen libcuda.so.1" in msg and "\n" not in msg


def test_driver_too_old_for_cuda13_suggests_the_cu12_extra(tmp_path, monkeypatch):
    trt = _use(monkeypatch, FakeCudart(driver=12040, runtime=13000))
    with pytest.raises(BackendUnavailable) as info:
        TrtRunner(write_plan(tmp_path), tensorrt=trt).activate()
    msg = str(info.value)
    assert "driver is too old for CUDA 13.0" in msg and "CUDA 12.4" in msg and "pip install der-deploy[trt-cu12]" in msg
    assert "no CUDA GPU is visible" not in msg  # the misleading wording the issue reported


def test_no_driver_at_all_with_cuda_python_13(tmp_path, monkeypatch):
    trt = _use(monkeypatch, FakeCudart(driver=0, runtime=13000))  # (cudaErrorInsufficientDriver, None), driver 0
    with pytest.raises(BackendUnavailable, match="no NVIDIA driver is installed.*cudaErrorInsufficientDriver"):
        TrtRunner(write_plan(tmp_path), tensorrt=trt).activate()


def test_tensorrt_runtime_constructor_failure_quotes_the_logger(tmp_path, monkeypatch):
    # cuda-python 12 is happy with a CUDA 12.8 driver, but the TensorRT wheel is the CUDA 13 build:
    # trt.Runtime raises TypeError (pybind11 factory returned nullptr) after logging CUDA error 35.
    cudart = FakeCudart(driver=12080, runtime=12080)
    trt = _use(monkeypatch, cudart, cuda_major=13)
    with pytest.raises(BackendUnavailable) as info:
        TrtRunner(write_plan(tmp_path), tensorrt=trt).activate()
    msg = str(info.value)
    assert "could not create a runtime" in msg and "CUDA initialization failure with error: 35" in msg
    assert "driver is too old" in msg and "der-deploy[trt-cu12]" in msg and "nullptr" not in msg
    assert cudart.device == {} and cudart.streams == set()


def test_inference_from_another_thread_runs_on_the_runners_device(tmp_path, monkeypatch):
    # The current CUDA device is per thread: a pipeline thread starts on device 0.
    cudart = FakeCudart(gpus=[("Fake GPU A", 8, 6), ("Fake GPU A", 8, 6)])
    trt = _use(monkeypatch, cudart)
    x = images(5)
    result: dict = {}

    def work(runner):
        try:
            result["out"] = runner.infer({"images": x})
        except Exception as err:  # surfaced by the assert below
            result["err"] = err

    with TrtRunner(write_plan(tmp_path), device=1, tensorrt=trt) as runner:
        assert cudart.current() == 1 and set(cudart.owner.values()) == {1}
        t = threading.Thread(target=work, args=(runner,))
        t.start()
        t.join(30)
    assert "err" not in result, result.get("err")
    np.testing.assert_allclose(result["out"]["scores"], reference(x.astype(np.float64))["scores"], rtol=1e-5)
    assert cudart.device == {} and cudart.host == {}
