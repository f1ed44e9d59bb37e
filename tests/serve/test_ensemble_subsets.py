"""The served ensemble answers any subset of its outputs (issue 17 item 6): a client that asks der_e2e for
``scores`` alone, ``labels`` alone or both gets exactly those, equal to the full request's, over HTTP and gRPC;
and Triton's classification extension (``class_count`` on ``scores``) names the card's classes. The server is
a REAL tritonserver on loopback (tests/serve/conftest.py)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tritonclient.http")

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402


OUTPUTS = ("scores", "labels")
SUBSETS = [("scores",), ("labels",), ("scores", "labels")]
TIMEOUT_S = 30


def _client(server, transport):
    if transport == "grpc":
        return grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['--grpc-port']}")
    return httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['--http-port']}",
                                                        network_timeout=TIMEOUT_S)


def _infer(server, transport, images, outputs, **requested):
    mod, client = _client(server, transport)
    arr = np.array(images, dtype=object).reshape(len(images), 1)
    inp = mod.InferInput("image", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    outs = [mod.InferRequestedOutput(n, **requested) for n in outputs]
    kw = {"client_timeout": TIMEOUT_S} if transport == "grpc" else {}
    return client.infer("der_e2e", [inp], outputs=outs, **kw)


def _names(res, transport):
    got = res.get_response()
    return sorted(o.name for o in got.outputs) if transport == "grpc" else sorted(o["name"] for o in got["outputs"])


@pytest.fixture(scope="module")
def data(serve_images):
    return [p.read_bytes() for p in serve_images[:4]]


@pytest.fixture(scope="module")
def full(server, data):
    """The reference: both outputs, the request every client made so far (no outputs named = all of them)."""
    mod, client = _client(server, "http")
    arr = np.array(data, dtype=object).reshape(len(data), 1)
    inp = mod.InferInput("image", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    res = client.infer("der_e2e", [inp])
    return {n: res.as_numpy(n) for n in OUTPUTS}


def test_no_ensemble_output_feeds_a_later_step(python_repo):
    """What Triton's step pruning needs (repository.SCORES_OUT): an output the client did not ask for may be
    dropped with the step that makes it only when no other step reads it."""
    from der_deploy.serve.repository import parse_pbtxt

    ens = parse_pbtxt((python_repo / "der_e2e" / "config.pbtxt").read_text(encoding="utf-8"))
    outputs = {t.name for t in ens.output}
    assert outputs == set(OUTPUTS)
    steps = list(ens.ensemble_scheduling.step)
    assert not outputs & {v for s in steps for v in s.input_map.values()}
    assert {v for v in steps[-1].output_map.values()} == outputs  # both from the last step


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_subset_answers_exactly_those_outputs(server, data, full, transport, subset):
    res = _infer(server, transport, data, subset)
    assert _names(res, transport) == sorted(subset)
    for name in subset:
        got = res.as_numpy(name)
        assert got.dtype == full[name].dtype and got.shape == full[name].shape
        np.testing.assert_array_equal(got, full[name])


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_classification_extension_on_the_ensemble(server, data, full, tiny_onnx, transport):
    """class_count=2 on scores alone: "score:index:label" of the top-2 classes, labels from labels.txt (the card)."""
    from der_deploy.artifact import read_card

    classes = read_card(tiny_onnx).classes
    res = _infer(server, transport, data, ("scores",), class_count=2)
    assert _names(res, transport) == ["scores"]
    got = res.as_numpy("scores")
    assert got.shape == (len(data), 2)
    for row, scores in zip(got, full["scores"]):
        parts = [(v.decode() if isinstance(v, bytes) else v).split(":") for v in row]
        top = np.argsort(-scores, kind="stable")[:2]
        assert [int(p[1]) for p in parts] == list(top)
        assert [p[2] for p in parts] == [classes[i] for i in top]
        assert [float(p[0]) for p in parts] == pytest.approx(scores[top].tolist(), abs=1e-6)
