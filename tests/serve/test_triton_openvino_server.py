"""The Python-backend engine model running on OpenVINO (`der-export --triton REPO --triton-backend python
--engine-backend openvino`), served by a REAL tritonserver on loopback: the served scores equal a local OpenVINO
Predictor's on the same files, and a bf16 repository on a CPU without native BF16 fails to load with the
runner's one-line reason instead of serving FP32."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tritonclient.http")
pytest.importorskip("openvino")

import tritonclient.http as httpclient  # noqa: E402

from der_deploy.serve.repository import write_repository  # noqa: E402
from der_deploy.serve.server import ServeError  # noqa: E402
from der_deploy.backends.openvino.core import shared_core  # one Core per process (see there)


def _native_bf16() -> bool:
    return "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def ov_repo(tiny_onnx, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton-ov") / "repo"
    write_repository(tiny_onnx, repo, backend="python", engine_backend="openvino", max_batch=16)
    return repo


def test_served_openvino_engine_matches_local_openvino(ov_repo, tiny_onnx, serve_images, start_server):
    from der_deploy.runtime.predictor import Predictor

    with Predictor(tiny_onnx, backend="openvino") as p:
        local = p.predict(serve_images)
    classes = list(local[0].scores)
    want = np.array([[r.scores[c] for c in classes] for r in local], dtype=np.float32)
    data = np.array([f.read_bytes() for f in serve_images], dtype=object).reshape(-1, 1)
    with start_server(ov_repo) as srv:
        srv.wait_ready(timeout=180)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{srv.ports['--http-port']}", network_timeout=60)
        inp = httpclient.InferInput("image", list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        res = client.infer("der_e2e", [inp], outputs=[httpclient.InferRequestedOutput(n) for n in ("scores", "labels")])
    np.testing.assert_allclose(res.as_numpy("scores"), want, rtol=0, atol=1e-5)
    assert [[classes[i] for i in np.flatnonzero(row)] for row in res.as_numpy("labels")] == [
        sorted(r.labels, key=classes.index) for r in local]


def test_bf16_engine_without_native_bf16_is_refused_not_downgraded(tiny_onnx, tmp_path, start_server):
    if _native_bf16():
        pytest.skip("this CPU runs BF16 natively; the refusal is checked on CPUs without it")
    repo = tmp_path / "repo"
    write_repository(tiny_onnx, repo, backend="python", engine_backend="openvino", precision="bf16", max_batch=4)
    with pytest.raises(ServeError) as err:
        with start_server(repo) as srv:
            srv.wait_ready(timeout=180)
    message = str(err.value)
    assert "der" in message and "bf16" in message.lower()
    assert "\n" not in message
