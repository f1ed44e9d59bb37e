"""A REAL tritonserver (127.0.0.1, free ports, bounded waits) serving a repository exported from the trained
tiny model: the served entry must agree with local der-infer, batch concurrent requests, refuse bad input
without falling over, and the native repositories must be refused only for their missing backends."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.http")

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from der_deploy.serve.server import ServeError, TritonServer, free_ports  # noqa: E402

BIN = Path(sys.executable).parent  # the console scripts of this environment


@pytest.fixture(scope="module")
def local(tiny_onnx, serve_images):
    from der_deploy.runtime.predictor import Predictor

    with Predictor(tiny_onnx) as p:
        return p.predict(serve_images)


def _http(server):
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['--http-port']}", network_timeout=30)


def _image_input(mod, data, shape=None):
    arr = np.array(data, dtype=object).reshape(shape or (len(data), 1))
    inp = mod.InferInput("image", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    return inp


def test_ready(server):
    c = _http(server)
    assert c.is_server_ready()
    index = {m["name"]: m["state"] for m in c.get_model_repository_index()}
    assert index == {"der": "READY", "der_preprocess": "READY", "der_postprocess": "READY", "der_e2e": "READY"}


@pytest.mark.parametrize("transport", ["http-binary", "http-json", "grpc"])
def test_entry_matches_local_inference(server, local, serve_images, transport):
    """Encoded file bytes in, scores (<= 1e-5) and label decisions out, equal to Predictor on the same files."""
    data = [p.read_bytes() for p in serve_images]
    if transport == "grpc":
        c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['--grpc-port']}")
        res = c.infer("der_e2e", [_image_input(grpcclient, data)])
    else:
        binary = transport == "http-binary"
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("scores", "labels")]
        res = _http(server).infer("der_e2e", [_image_input(httpclient, data)], outputs=outs)
    scores, labels = res.as_numpy("scores"), res.as_numpy("labels")
    classes = list(local[0].scores)
    want = np.array([[p.scores[c] for c in classes] for p in local], dtype=np.float32)
    assert scores.shape == want.shape and labels.dtype == bool
    np.testing.assert_allclose(scores, want, rtol=0, atol=1e-5)
    assert [[classes[i] for i in np.flatnonzero(row)] for row in labels] == [
        sorted(p.labels, key=classes.index) for p in local]
    assert labels.any() and (~labels).any()  # the trained model makes both decisions on these images


def test_classification_extension_names_labels(server, local, serve_images, tiny_onnx):
    from der_deploy.images import load_and_preprocess
    from der_deploy.artifact import read_card

    card = read_card(tiny_onnx)
    x = load_and_preprocess(serve_images[0], card)[None]
    inp = httpclient.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = _http(server).infer("der", [inp], outputs=[httpclient.InferRequestedOutput("scores", class_count=2)])
    got = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("scores").reshape(-1)]
    top = sorted(local[0].scores.items(), key=lambda kv: -kv[1])[:2]
    assert [g.split(":")[2] for g in got] == [name for name, _ in top]
    assert [float(g.split(":")[0]) for g in got] == pytest.approx([s for _, s in top], abs=1e-5)


def _batch_sizes(client, model):
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def test_concurrent_requests_are_batched(server, serve_images):
    before = _batch_sizes(_http(server), "der")
    data = [p.read_bytes() for p in serve_images]
    errors: list[BaseException] = []

    def worker(k):
        c = _http(server)
        try:
            for i in range(6):
                c.infer("der_e2e", [_image_input(httpclient, [data[(k + i) % len(data)]])])
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    after = _batch_sizes(_http(server), "der")
    grown = {b: n - before.get(b, 0) for b, n in after.items() if n > before.get(b, 0)}
    assert sum(b * n for b, n in grown.items()) == 72  # every image went through the engine exactly once
    assert max(grown) > 1, f"no batched execution: {grown}"


@pytest.mark.parametrize("case", ["not-an-image", "empty", "wrong-dtype", "wrong-shape", "unknown-input"])
def test_bad_requests_get_errors_and_server_keeps_serving(server, serve_images, case):
    c = _http(server)
    if case == "not-an-image":
        inputs, expect = [_image_input(httpclient, [b"GIF89a is not what this is"])], "request item 0: not an image"
    elif case == "empty":
        inputs, expect = [_image_input(httpclient, [b""])], "request item 0: empty (0 bytes)"
    elif case == "wrong-dtype":
        inp = httpclient.InferInput("image", [1, 1], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 1), np.float32))
        inputs, expect = [inp], "FP32"
    elif case == "wrong-shape":
        inputs, expect = [_image_input(httpclient, [b"a", b"b"], shape=(1, 2))], "shape"
    else:
        inp = httpclient.InferInput("pixels", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b"x"]], dtype=object))
        inputs, expect = [inp], "pixels"
    with pytest.raises(InferenceServerException, match=expect.replace("(", r"\(").replace(")", r"\)")) as err:
        c.infer("der_e2e", inputs)
    assert err.value.status() == "400"  # the client's input is wrong, not the server (INVALID_ARG)
    ok = c.infer("der_e2e", [_image_input(httpclient, [serve_images[0].read_bytes()])])
    assert ok.as_numpy("scores").shape == (1, 5)
    assert c.is_server_live() and c.is_model_ready("der_e2e")


def _infer_records(args):
    proc = subprocess.run([str(BIN / "der-infer"), *args, "--format", "jsonl"], capture_output=True, text=True,
                          timeout=120)
    return proc, [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("scheme", ["", "grpc://"])
def test_der_infer_triton_writes_local_records(server, tiny_onnx, serve_images, tmp_path, scheme):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in serve_images[:6]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "zero.png").write_bytes(b"")
    port = server.ports["--grpc-port" if scheme else "--http-port"]
    lp, local = _infer_records(["--engine", str(tiny_onnx), str(folder)])
    rp, remote = _infer_records(["--triton", f"{scheme}127.0.0.1:{port}", str(folder), "--batch-size", "4"])
    assert lp.returncode == rp.returncode == 0, rp.stderr
    assert len(remote) == len(local) == 8
    for a, b in zip(local, remote):
        assert a.keys() == b.keys() and a["path"] == b["path"]
        if "error" in a:
            assert a["error"] == b["error"]  # the server's decode error in local der-infer's words
        else:
            assert a["labels"] == b["labels"]
            assert list(a["scores"]) == list(b["scores"])
            assert max(abs(a["scores"][k] - b["scores"][k]) for k in a["scores"]) <= 1e-5
    assert sum("error" in r for r in remote) == 2
    assert [ln for ln in rp.stderr.splitlines() if ln.startswith("skipped")] == [
        ln for ln in lp.stderr.splitlines() if ln.startswith("skipped")]


def test_der_infer_triton_unreachable_and_wrong_model(server, serve_images):
    port = free_ports(1)[0]
    proc, _ = _infer_records(["--triton", f"127.0.0.1:{port}", str(serve_images[0])])
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot reach Triton") and "Traceback" not in proc.stderr
    proc, _ = _infer_records(["--triton", f"127.0.0.1:{server.ports['--http-port']}/der", str(serve_images[0])])
    assert proc.returncode == 2 and "takes ['images'], not encoded images" in proc.stderr and "der_e2e" in proc.stderr


@pytest.mark.parametrize("kind", ["onnxruntime", "tensorrt"])
def test_native_repository_is_refused_only_for_the_missing_backend(kind, tiny_onnx, tmp_path, triton_install,
                                                                    stub_python, fake_plan):
    """This server has no ONNX Runtime / TensorRT backend: the engine must fail for exactly that reason,
    while its config (and the Python models beside it) pass Triton's own validation."""
    from der_deploy.serve.repository import write_repository
    from der_deploy.artifact import read_card

    engine = tiny_onnx if kind == "onnxruntime" else fake_plan(tmp_path / "p", read_card(tiny_onnx), onnx=tiny_onnx)
    repo = write_repository(engine, tmp_path / "repo").root
    http, grpc, metrics = free_ports(3)
    srv = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, server=triton_install.binary,
                       python=stub_python)
    with srv, pytest.raises(ServeError) as err:
        srv.wait_ready(timeout=90)
    lib = "onnxruntime" if kind == "onnxruntime" else "tensorrt"
    assert str(err.value) == (f"Triton failed to load model 'der': Invalid argument: unable to find backend library "
                              f"for backend '{lib}', try specifying runtime on the model configuration.")
    log = "\n".join(srv.lines)
    assert "Poll failed" not in log  # no config was rejected
    for ok in ("der_preprocess", "der_postprocess"):
        assert f"successfully loaded '{ok}'" in log
    assert "ensemble 'der_e2e' depends on 'der' which has no loaded version" in log


def test_load_generator_is_bounded_and_local(server, serve_images):
    from der_deploy.errors import DerError
    from der_deploy.serve.load import run_load

    url = f"127.0.0.1:{server.ports['--http-port']}"
    res = run_load(url, serve_images, requests=24, concurrency=4, warmup=1)
    assert (res.requests, res.errors, len(res.latencies_s)) == (24, 0, 24)
    assert 0 < res.percentile_ms(50) <= res.percentile_ms(99) <= res.wall_s * 1e3
    assert res.img_s == pytest.approx(24 / res.wall_s)
    cut = run_load(url, serve_images, requests=10_000, concurrency=2, warmup=0, deadline_s=0.5)
    assert 0 < cut.requests < 10_000 and cut.wall_s < 0.5 + 30  # stopped by its deadline, not by N
    with pytest.raises(DerError, match="only targets a server on this machine"):
        run_load("10.0.0.1:8000", serve_images, requests=1, concurrency=1)


@pytest.mark.parametrize("rule", [{"threshold": 0.3}, {"top_k": 2}])
def test_client_rules_match_predictor(server, local, tiny_onnx, serve_images, rule):
    from der_deploy.runtime.predictor import Predictor
    from der_deploy.serve.client import TritonPredictor

    with Predictor(tiny_onnx) as p:
        want = p.predict(serve_images, **rule)
    with TritonPredictor(f"grpc://127.0.0.1:{server.ports['--grpc-port']}", concurrency=3) as t:
        assert t.model == "der_e2e" and t.card.classes == list(local[0].scores)
        got = list(t.predict_iter(serve_images, **rule))
    assert [g.labels for g in got] == [w.labels for w in want]
    assert [g.path for g in got] == [str(p) for p in serve_images]
