"""export_onnx on a random resnet18 DER: graph content, dynamic batch in ORT, metadata, checks, failures."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper, TensorProto

from der_deploy.artifact.card import ONNX_METADATA_KEY, ModelCard
from der_deploy.artifact.keys import PRECISION_KEY
from der_deploy.errors import DerError, ExportError, VerificationError
from der_deploy.export import verify as verify_mod
from der_deploy.export.graph import check_reduce_axes, head_node_names, read_onnx_card
from der_deploy.export.onnx_export import export_onnx, export_onnx_report
from der_deploy.train.checkpoint import save_checkpoint
from der_models import random_der


CLASSES = ["cat", "dog", "car", "tree", "sky"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = random_der()
    card = ModelCard(classes=CLASSES, arch="resnet18", input_size=(64, 64), thresholds=[0.3, 0.4, 0.5, 0.6, 0.7])
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "r18.pt", model, card), model, card


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    path, _, _ = ckpt
    report = export_onnx_report(path, tmp_path_factory.mktemp("onnx") / "der.onnx", cadm=True, show=False)
    return report


def test_report_and_graph_io(exported):
    assert exported.verification.passed
    assert [o.name for o in exported.verification.outputs] == ["logits", "scores", "cadm"]
    m = onnx.load(str(exported.path))
    (inp,) = m.graph.input
    assert inp.name == "images" and inp.type.tensor_type.elem_type == TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 64]
    outs = {o.name: o.type.tensor_type.shape.dim for o in m.graph.output}
    assert list(outs) == ["logits", "scores", "cadm"]
    assert outs["logits"][0].dim_param == dims[0].dim_param and outs["logits"][1].dim_value == 5
    assert [d.dim_value for d in outs["cadm"][1:]] == [5, 2, 2]
    onnx.checker.check_model(m, full_check=True)


def test_theta_once_and_no_embed_weights(exported, ckpt):
    _, model, _ = ckpt
    m = onnx.load(str(exported.path))
    theta = model.classifier.weight.detach().numpy()
    variants = [theta, 0.5 * theta, theta.T, 0.5 * theta.T]
    inits = [numpy_helper.to_array(i) for i in m.graph.initializer]
    hits = [a for a in inits if any(a.shape == v.shape and np.array_equal(a, v) for v in variants)]
    assert len(hits) == 1
    hw = model.map_size[0] * model.map_size[1]
    embed = [p.detach().numpy() for p in model.embed.parameters()]
    assert not any(a.shape == (hw, hw) for a in inits)
    assert not any(a.shape == e.shape and np.array_equal(a, e) for a in inits for e in embed)
    # nothing else of size C×d (e.g. a transposed copy made by constant folding)
    assert sum(a.size == theta.size and a.ndim == 2 for a in inits) == 1


def test_dynamic_batch_matches_pytorch(exported, ckpt):
    _, model, _ = ckpt
    sess = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for n in (1, 3, 5):
        x = rng.standard_normal((n, 3, 64, 64)).astype(np.float32)
        logits, scores, cadm = sess.run(["logits", "scores", "cadm"], {"images": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
        assert logits.shape == (n, 5) and cadm.shape == (n, 5, 2, 2)
        np.testing.assert_allclose(logits, ref.logits.numpy(), atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(scores, torch.sigmoid(ref.logits).numpy(), atol=1e-5, rtol=1e-3)
        np.testing.assert_allclose(cadm, ref.cadm.numpy(), atol=1e-4, rtol=1e-3)


def test_metadata_round_trip(exported, ckpt):
    _, _, card = ckpt
    back = read_onnx_card(exported.path)
    assert back == card and back.thresholds == [0.3, 0.4, 0.5, 0.6, 0.7]
    m = onnx.load(str(exported.path))
    meta = {p.key: p.value for p in m.metadata_props}
    assert ModelCard.from_json(meta[ONNX_METADATA_KEY]) == card
    assert meta[PRECISION_KEY] == "fp32" and meta["der_deploy.batch"] == "1:32:32"
    assert m.producer_name == "der-deploy" and "5 classes" in m.doc_string
    # no local paths leak through node annotations
    assert not any(p.key == "pkg.torch.onnx.stack_trace" for n in m.graph.node for p in n.metadata_props)


def test_reduce_axes_are_constant_and_check_rejects_computed_axes(exported):
    m = onnx.load(str(exported.path))
    reduces = [n for n in m.graph.node if n.op_type.startswith("Reduce")]
    assert len(reduces) == 2
    check_reduce_axes(m)
    assert len(head_node_names(m)) >= 8
    # axes computed at run time (Shape -> Gather) must be rejected
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    idx = numpy_helper.from_array(np.array([0], np.int64), "idx")
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "idx"], ["axes"]),
             helper.make_node("ReduceMax", ["x", "axes"], ["y"], name="bad_reduce")]
    bad = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [idx]), opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(ExportError, match="bad_reduce.*constant axes"):
        check_reduce_axes(bad)
    good = helper.make_model(helper.make_graph(
        [helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([1], np.int64))),
         helper.make_node("ReduceMax", ["x", "axes"], ["y"])], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 20)])
    check_reduce_axes(good)


def test_failed_verification_is_an_error_and_writes_nothing(ckpt, tmp_path, monkeypatch):
    path, _, _ = ckpt
    real = verify_mod.reference_outputs

    def off_by_a_bit(*args, **kwargs):
        ref = real(*args, **kwargs)
        ref["logits"] = ref["logits"] + 1e-2
        return ref

    monkeypatch.setattr(verify_mod, "reference_outputs", off_by_a_bit)
    out = tmp_path / "der.onnx"
    with pytest.raises(VerificationError, match="logits"):
        export_onnx(path, out)
    assert list(tmp_path.iterdir()) == []


def test_samples_folder_without_images(ckpt, tmp_path):
    path, _, _ = ckpt
    (tmp_path / "empty").mkdir()
    with pytest.raises(DerError, match="no images in"):
        export_onnx(path, tmp_path / "der.onnx", samples=tmp_path / "empty")
    assert not (tmp_path / "der.onnx").exists()


def test_baseline_export(tmp_path):
    model = random_der(head="baseline")
    card = ModelCard(classes=CLASSES, arch="resnet18", input_size=(64, 64))
    ck = save_checkpoint(tmp_path / "base.pt", model, card)
    with pytest.raises(ExportError, match="no CADMs"):
        export_onnx(ck, tmp_path / "b.onnx", cadm=True)
    out = export_onnx(ck, tmp_path / "b.onnx")
    m = onnx.load(str(out))
    assert [o.name for o in m.graph.output] == ["logits", "scores"]
    check_reduce_axes(m)
