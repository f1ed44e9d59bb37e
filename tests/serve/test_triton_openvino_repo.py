"""`der-export --triton REPO --triton-backend openvino` and the Python engine model on OpenVINO: the configs parse
against Triton's own ModelConfig schema, carry the parameters Triton's openvino backend reads, and the engine
file they point at loads in OpenVINO itself. (The bundled tritonserver has only the Python backend, so the
openvino-backend repository is checked here, and the Python engine on OpenVINO is served in test_triton_server.)"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from der_deploy.errors import ExportError
from der_deploy.serve.repository import parse_pbtxt, write_repository
from der_deploy.backends.openvino.core import shared_core  # one Core per process (see there)


def _config(repo, model="der"):
    return parse_pbtxt((repo / model / "config.pbtxt").read_text())


def _params(cfg) -> dict[str, str]:
    return {k: v.string_value for k, v in cfg.parameters.items()}


def test_openvino_backend_repository(tiny_onnx, tmp_path):
    repo = tmp_path / "repo"
    rep = write_repository(tiny_onnx, repo, backend="openvino", instances=2, precision="bf16", max_batch=8)
    cfg = _config(repo)
    assert cfg.backend == "openvino" and not cfg.platform
    assert cfg.default_model_filename == "model.onnx"
    assert cfg.max_batch_size == 8
    assert [g.kind for g in cfg.instance_group] == [cfg.instance_group[0].KIND_CPU] and cfg.instance_group[0].count == 2
    assert _params(cfg)["NUM_STREAMS"] == "2" and _params(cfg)["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert _params(cfg)["HINT_BF16"] == "YES"
    engine = repo / "der" / "1" / "model.onnx"
    assert hashlib.sha256(engine.read_bytes()).digest() == hashlib.sha256(tiny_onnx.read_bytes()).digest()
    assert [i.name for i in cfg.input] == ["images"] and {o.name for o in cfg.output} >= {"scores", "logits"}
    assert rep.entry == "der_e2e" and set(rep.models) == {"der", "der_preprocess", "der_postprocess", "der_e2e"}


def test_openvino_backend_latency_single_instance_fp32(tiny_onnx, tmp_path):
    write_repository(tiny_onnx, tmp_path / "repo", backend="openvino")
    params = _params(_config(tmp_path / "repo"))
    assert params == {"NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY", "der_card": params["der_card"]}


def test_openvino_repository_engine_loads_in_openvino(tiny_onnx, tmp_path):
    pytest.importorskip("openvino")
    write_repository(tiny_onnx, tmp_path / "repo", backend="openvino")
    model = shared_core().read_model(str(tmp_path / "repo" / "der" / "1" / "model.onnx"))
    assert [p.get_any_name() for p in model.inputs] == ["images"]
    assert model.inputs[0].get_partial_shape()[0].is_dynamic  # Triton batches: the batch dimension stays dynamic


def test_python_engine_on_openvino_parameters(tiny_onnx, tmp_path):
    write_repository(tiny_onnx, tmp_path / "repo", backend="python", engine_backend="openvino")
    params = _params(_config(tmp_path / "repo"))
    assert params["der_engine_file"] == "model.onnx"
    assert params["der_engine_backend"] == "openvino" and params["der_engine_precision"] == "fp32"
    write_repository(tiny_onnx, tmp_path / "repo2", backend="python")
    assert _params(_config(tmp_path / "repo2"))["der_engine_backend"] == "ort"


@pytest.mark.parametrize("kwargs,match", [
    (dict(backend="onnxruntime", engine_backend="openvino"), "--engine-backend chooses"),
    (dict(backend="onnxruntime", precision="bf16"), "OpenVINO's inference precision"),
    (dict(backend="python", precision="bf16"), "OpenVINO's inference precision"),
    (dict(backend="openvino", precision="int4"), "unknown precision 'int4'"),
    (dict(backend="python", engine_backend="tvm"), "unknown engine backend 'tvm'"),
])
def test_bad_combinations_are_refused(tiny_onnx, tmp_path, kwargs, match):
    with pytest.raises(ExportError, match=match):
        write_repository(tiny_onnx, tmp_path / "repo", **kwargs)
    assert not (tmp_path / "repo" / "der").exists()


def test_cli_usage_error_is_one_line(tiny_onnx, tmp_path):
    proc = subprocess.run([str(Path(sys.executable).with_name("der-export")), str(tiny_onnx), "--triton", str(tmp_path / "r"),
                           "--triton-precision", "bf16"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--triton-precision bf16 is OpenVINO's inference precision" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
