"""OnnxRuntimeRunner and engine artifacts (card reading, runner choice, errors)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from der_deploy.artifact.card import ONNX_METADATA_KEY
from der_deploy.errors import BackendUnavailable, DerError, EngineError
from der_deploy.artifact import onnx_metadata, read_card
from der_deploy.backends import open_runner
from der_deploy.backends.onnxruntime.runner import OnnxRuntimeRunner, resolve_providers


SIZE = 32  # the handmade models' input size (tests/runtime/conftest.py)


def _batch(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, SIZE, SIZE)).astype(np.float32)


def test_runner_matches_numpy_graph(tiny_model):
    x = _batch(5)
    with OnnxRuntimeRunner(tiny_model.path) as runner:
        out = runner.infer({"images": x})
        assert runner.last_inference_time > 0
        assert runner.providers == ["CPUExecutionProvider"]
    ref = tiny_model.reference(x)
    assert set(out) == {"logits", "scores", "cadm"}
    for name in out:
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-5)
    assert not runner.is_active


def test_runner_from_bytes_and_metadata(tiny_model, fixed_batch_model):
    with OnnxRuntimeRunner(tiny_model.path.read_bytes(), intra_op_threads=1) as runner:
        (inp,) = runner.get_input_metadata()
        assert inp.name == "images" and inp.dtype == np.float32 and inp.shape == ("N", 3, SIZE, SIZE)
        outs = {m.name: m.shape for m in runner.get_output_metadata()}
        assert outs["scores"] == ("N", 4) and outs["cadm"] == ("N", 4, SIZE // 4, SIZE // 4)
        assert runner.max_batch is None and runner.min_batch == 1
        assert runner.custom_metadata[ONNX_METADATA_KEY] == tiny_model.card.to_json(indent=None)
    with OnnxRuntimeRunner(fixed_batch_model.path) as runner:
        assert runner.max_batch == 4 and runner.min_batch == 4


def test_infer_requires_activation(tiny_model):
    runner = OnnxRuntimeRunner(tiny_model.path)
    with pytest.raises(EngineError, match="not active"):
        runner.infer({"images": _batch(1)})


def test_provider_names():
    assert resolve_providers(None) == ["CPUExecutionProvider"]
    assert resolve_providers("cuda, cpu") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(["tensorrt"]) == ["TensorrtExecutionProvider"]
    with pytest.raises(BackendUnavailable, match="unknown execution provider 'gpu'"):
        resolve_providers("gpu")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA provider is installed")
def test_missing_provider_is_an_error_not_a_downgrade(tiny_model):
    runner = OnnxRuntimeRunner(tiny_model.path, providers="cuda")
    with pytest.raises(BackendUnavailable) as info:
        runner.activate()
    msg = str(info.value)
    assert "CUDAExecutionProvider" in msg and "der-deploy[gpu]" in msg and "\n" not in msg
    assert not runner.is_active


def test_provider_dropped_by_ort_is_detected(tiny_model, monkeypatch):
    """ORT only warns and runs on CPU when a listed provider cannot be used: the runner must refuse."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider would really initialise here")
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    runner = OnnxRuntimeRunner(tiny_model.path, providers="cuda")
    with pytest.warns(UserWarning), pytest.raises(BackendUnavailable, match="could not initialise CUDAExecutionProvider"):
        runner.activate()


def test_corrupt_and_missing_files(tmp_path, tiny_model):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(EngineError) as info:
        OnnxRuntimeRunner(bad).activate()
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(EngineError, match="no such ONNX file"):
        OnnxRuntimeRunner(tmp_path / "missing.onnx").activate()
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(tiny_model.path.read_bytes()[:300])
    for path in (bad, truncated):
        with pytest.raises(EngineError, match="not a valid ONNX model"):
            read_card(path)


def test_onnx_metadata_matches_onnx_library(tiny_model):
    model = onnx.load(str(tiny_model.path))
    expected = {p.key: p.value for p in model.metadata_props}
    assert onnx_metadata(tiny_model.path) == expected
    assert read_card(tiny_model.path) == tiny_model.card


def test_onnx_metadata_skips_external_data(tmp_path, tiny_model):
    """A model saved with external weights still yields its card without loading the weights."""
    model = onnx.load(str(tiny_model.path))
    out = tmp_path / "ext.onnx"
    onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    assert read_card(out).classes == tiny_model.card.classes


def test_missing_card(tmp_path, make_tiny):
    m = make_tiny(tmp_path / "nocard.onnx", card=False)
    with pytest.raises(EngineError, match=r"has no der-deploy model card; export it with der-export"):
        read_card(m.path)


def test_bad_card_json(tmp_path, tiny_model):
    model = onnx.load(str(tiny_model.path))
    for p in model.metadata_props:
        if p.key == ONNX_METADATA_KEY:
            p.value = '{"classes": []}'
    path = tmp_path / "badcard.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EngineError, match="bad model card"):
        read_card(path)


def test_open_runner_choices(tmp_path, tiny_model):
    runner = open_runner(tiny_model.path)
    assert isinstance(runner, OnnxRuntimeRunner) and not runner.is_active
    assert isinstance(open_runner(tiny_model.path, backend="ort", providers="cpu"), OnnxRuntimeRunner)
    with pytest.raises(EngineError, match="is an ONNX model, not a TensorRT engine"):
        open_runner(tiny_model.path, backend="trt")
    with pytest.raises(EngineError, match="unknown backend"):
        open_runner(tiny_model.path, backend="tf")
    odd = tmp_path / "model.pb"
    odd.write_bytes(b"x")
    with pytest.raises(EngineError, match="unknown engine type '.pb'"):
        open_runner(odd)
    with pytest.raises(EngineError, match="no such file"):
        open_runner(tmp_path / "nothing.onnx")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real plan")
    with pytest.raises(EngineError, match="is a TensorRT engine"):
        open_runner(plan, backend="ort")
    with pytest.raises(EngineError, match="--providers applies to ONNX Runtime only"):
        open_runner(plan, providers="cuda")


def test_plan_without_tensorrt_fails_cleanly(tmp_path):
    """Without TensorRT (or without the TRT module) a .plan gives a DerError, never an ImportError."""
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real plan")
    with pytest.raises(DerError):
        runner = open_runner(plan)
        runner.activate()
    with pytest.raises(DerError):
        read_card(plan)
