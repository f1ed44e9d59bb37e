"""FP16 and INT8 variants: graph structure on a random model (fast), error budgets on the trained one (slow)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper
from PIL import Image

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import DerError
from der_deploy.export import calibration as calib_mod
from der_deploy.export.calibration import calibration_images
from der_deploy.artifact.keys import PRECISION_KEY
from der_deploy.export.graph import check_reduce_axes, head_node_names, read_onnx_card
from der_deploy.export.onnx_export import export_onnx
from der_deploy.export.precision import convert_fp16
from der_deploy.export.quantize import quantize_int8
from der_deploy.export.verify import TOLERANCES, image_inputs, reference_outputs, verify_onnx
from der_deploy.train.checkpoint import save_checkpoint
from der_models import random_der


def write_images(folder, n, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:80, 0:80]
    for i in range(n):
        base = (np.sin(xx / (5 + i)) * 60 + np.cos(yy / 7) * 60 + 128)[..., None] * rng.uniform(0.5, 1.0, 3)
        img = np.clip(base + rng.normal(0, 20, (80, 80, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    d = tmp_path_factory.mktemp("prec")
    card = ModelCard(classes=list("abcde"), arch="resnet18", input_size=(64, 64))
    ck = save_checkpoint(d / "m.pt", random_der(), card)
    return export_onnx(ck, d / "der.onnx", cadm=True), d


def elem_types(model):
    m = onnx.shape_inference.infer_shapes(model)
    g = m.graph
    t = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    t.update({i.name: i.data_type for i in g.initializer})
    return t


def test_fp16_graph_structure(fp32):
    src, d = fp32
    out = convert_fp16(src, d / "der.fp16.onnx")
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    types = elem_types(m)
    assert [types[i.name] for i in m.graph.input] == [TensorProto.FLOAT]
    assert [types[o.name] for o in m.graph.output] == [TensorProto.FLOAT] * 3
    head = set(head_node_names(m))
    for node in m.graph.node:
        if node.op_type in ("ReduceMax", "Sigmoid", "MatMul", "Add") and node.name in head:
            assert types[node.input[0]] == TensorProto.FLOAT, node.name
        if node.op_type == "Conv":
            assert types[node.input[0]] == TensorProto.FLOAT16 and types[node.input[1]] == TensorProto.FLOAT16
    assert {n.op_type for n in m.graph.node if n.name in head} >= {"ReduceMax", "MatMul", "Sigmoid"}
    assert sum(n.op_type == "Cast" for n in m.graph.node) == 2  # input -> fp16, features -> fp32
    halfs = [i for i in m.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) == 2]
    assert len(halfs) == 1  # ½θ, once, in FP32
    check_reduce_axes(m)
    assert read_onnx_card(out) == read_onnx_card(src)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta[PRECISION_KEY] == "fp16" and meta["der_deploy.batch"] == "1:32:32"
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    a = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    b = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    assert all(u.dtype == np.float32 and u.shape == v.shape for u, v in zip(a, b))
    assert np.abs(a[0] - b[0]).max() < 0.05 * max(1.0, np.abs(b[0]).max())
    with pytest.raises(Exception, match="convert the FP32"):
        convert_fp16(out, d / "again.onnx")


def zero_points(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]


def test_int8_schemes_metadata_head_and_shared_cache(fp32, monkeypatch):
    src, d = fp32
    calib = write_images(d / "calib", 10)
    cache = d / "der.calib.json"
    u8 = onnx.load(str(quantize_int8(src, d / "der.int8.onnx", calib, scheme="u8s8", cache=cache)))
    assert cache.is_file()

    def no_images(self):
        raise AssertionError("calibration images were read again")

    monkeypatch.setattr(calib_mod.CalibrationReader, "get_next", no_images)
    s8 = onnx.load(str(quantize_int8(src, d / "der.int8-s8s8.onnx", calib, scheme="s8s8", cache=cache)))
    for m, scheme in ((u8, "u8s8"), (s8, "s8s8")):
        meta = {p.key: p.value for p in m.metadata_props}
        assert meta[PRECISION_KEY] == f"int8-{scheme}"
        assert read_onnx_card_from(m) == read_onnx_card(src)
        check_reduce_axes(m)
        # the head's MatMul reads plain float tensors, not dequantized ones
        producers = {o: n.op_type for n in m.graph.node for o in n.output}
        (mm,) = [n for n in m.graph.node if n.op_type == "MatMul"]
        assert all(producers.get(i) != "DequantizeLinear" for i in mm.input)
        # per-channel int8 weights: one scale per output channel of the first conv
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        conv = next(n for n in m.graph.node if n.op_type == "Conv")
        wdq = next(n for n in m.graph.node if n.output[0] == conv.input[1])
        assert wdq.op_type == "DequantizeLinear" and inits[wdq.input[0]].dtype == np.int8
        assert inits[wdq.input[1]].shape == (64,)
    assert {z.dtype for z in zero_points(u8)} == {np.dtype(np.uint8)}
    s8_zp = zero_points(s8)
    assert {z.dtype for z in s8_zp} == {np.dtype(np.int8)} and all((z == 0).all() for z in s8_zp)
    # different images -> different key -> recalibrates (and so reads images)
    write_images(d / "calib2", 4, seed=3)
    with pytest.raises(Exception, match="read again"):
        quantize_int8(src, d / "x.onnx", d / "calib2", scheme="u8s8", cache=cache)
    assert not (d / "x.onnx").exists()


def read_onnx_card_from(model):
    from der_deploy.export.graph import card_from_model

    return card_from_model(model)


def test_calibration_image_selection_and_errors(tmp_path):
    folder = write_images(tmp_path / "imgs", 10)
    picked = calibration_images(folder, limit=4)
    assert [p.name for p in picked] == ["img00.png", "img03.png", "img06.png", "img09.png"]
    assert len(calibration_images(folder)) == 10
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DerError, match="no images in .*empty"):
        calibration_images(tmp_path / "empty")
    with pytest.raises(DerError, match="does not exist"):
        calibration_images(tmp_path / "missing")


@pytest.mark.slow
def test_trained_variants_within_documented_tolerances(trained_ckpt, synth_voc, tmp_path):
    """FP32/FP16/INT8 of the trained tiny model on real images, against the training model."""
    from der_deploy.train.checkpoint import load_checkpoint

    model, card = load_checkpoint(trained_ckpt)
    images_dir = synth_voc / "JPEGImages"
    src = export_onnx((model, card), tmp_path / "der.onnx", cadm=True, samples=images_dir)
    x = image_inputs(images_dir, card, count=16)
    ref = reference_outputs(model, x, cadm=True)
    results = {"fp32": verify_onnx(src, ref, x, "fp32", show=False)}
    results["fp16"] = verify_onnx(convert_fp16(src, tmp_path / "der.fp16.onnx"), ref, x, "fp16", show=False)
    for scheme in ("u8s8", "s8s8"):
        q = quantize_int8(src, tmp_path / f"der.{scheme}.onnx", images_dir, scheme=scheme, calib_max=64)
        results[scheme] = verify_onnx(q, ref, x, "int8", show=False)
    for name, res in results.items():
        assert res.passed, (name, res.rows())
    # the variants are ordered by precision, as they must be if the conversion is sane
    assert results["fp32"]["logits"].mean_abs < results["fp16"]["logits"].mean_abs < results["u8s8"]["logits"].mean_abs
    assert results["fp16"]["scores"].max_abs <= TOLERANCES["fp16"]["atol"]["scores"]


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "convnext_tiny"])
def test_fp16_other_trunks_keep_unsupported_ops_in_fp32(arch, tmp_path):
    """Non-ResNet trunks convert: ops in FP16_OPS (HardSwish, Sigmoid, ReduceMean...) run in FP16, any other op
    (ConvNeXt's LayerNormalization) stays FP32 behind Casts, and the result agrees with the FP32 file."""
    import torch

    from der_deploy.export.precision import FP16_OPS
    from der_deploy.train.model import DER

    torch.manual_seed(0)
    size = (64, 64)
    model = DER(4, arch, input_size=size).eval()
    card = ModelCard(classes=list("abcd"), arch=arch, input_size=size)
    src = export_onnx(save_checkpoint(tmp_path / "m.pt", model, card), tmp_path / "der.onnx")
    out = convert_fp16(src, tmp_path / "der.fp16.onnx")
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    types, head = elem_types(m), set(head_node_names(m))
    ops = {n.op_type for n in m.graph.node}
    trunk = [n for n in m.graph.node if n.name not in head and n.op_type != "Cast"]
    for node in trunk:
        float_in = [types.get(i) for i in node.input if types.get(i) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        want = TensorProto.FLOAT16 if node.op_type in FP16_OPS else TensorProto.FLOAT
        assert all(t == want for t in float_in), (node.name, node.op_type, float_in)
    if arch == "convnext_tiny":
        assert "LayerNormalization" in ops and "LayerNormalization" not in FP16_OPS
    else:
        assert "HardSwish" in ops and all(types[n.input[0]] == TensorProto.FLOAT16 for n in trunk
                                          if n.op_type == "HardSwish")
    x = np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32)
    a = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["logits"], {"images": x})[0]
    b = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(["logits"], {"images": x})[0]
    assert np.abs(a - b).mean() <= 2e-3 * max(1.0, np.abs(b).max())  # the fp16 tolerance of der-export
