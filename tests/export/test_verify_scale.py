"""Scale-aware verification (issue 17): a correct export of a model with huge logits passes, a wrong fold fails.

The model is a random DER/resnet18 at 64 px whose classifier is scaled so that logits reach ~4e4 (an untrained
ResNet-101 at 448 reaches 7e4) and whose biases put one logit of each of several samples at ~0, where FP32
rounding (~1e-6 of the row's scale) is far above the fixed atol. It goes through the real export path
(trace, checks, verification in ONNX Runtime); the wrong folds edit the exported file's θ / bias initializers.
"""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from der_deploy.artifact.card import ModelCard
from der_deploy.errors import VerificationError
from der_deploy.export.onnx_export import export_onnx_report
from der_deploy.export.precision import convert_fp16
from der_deploy.export.quantize import quantize_int8
from der_deploy.export.verify import generated_inputs, image_inputs, reference_outputs, run_onnx, verify_onnx
from der_deploy.synth import generate
from der_models import random_der

pytestmark = pytest.mark.slow  # one resnet18 export (~1 min on 2 busy cores), shared by the module

CLASSES, SIZE, FACTOR = 12, 64, 2e4


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    model = random_der(classes=CLASSES, size=(SIZE, SIZE), seed=3)
    card = ModelCard(classes=[f"c{i}" for i in range(CLASSES)], arch="resnet18", input_size=(SIZE, SIZE))
    x = generated_inputs(card, 8)  # the inputs export verification uses without --samples
    with torch.no_grad():
        model.classifier.weight.mul_(FACTOR)
        model.classifier.bias.mul_(FACTOR)
        logits = model(torch.from_numpy(x)).logits
        for c in range(6):  # sample c's logit of class c at ~0: the element a fixed atol fails on
            model.classifier.bias[c] -= 2 * logits[c, c]  # Eq. 14: the bias enters the logit halved
    out = tmp_path_factory.mktemp("scale") / "big.onnx"
    refused = None
    try:
        report = export_onnx_report((model, card), out, show=False)
    except VerificationError as err:  # keep the file anyway, so the wrong-fold tests run on their own
        refused = str(err)
        report = export_onnx_report((model, card), out, verify=False, show=False)
    ref = reference_outputs(model, x)
    return dict(model=model, card=card, x=x, ref=ref, path=out, report=report, refused=refused)


def edited(src, dst, name_part, edit):
    """A copy of ``src`` with the initializer whose name contains ``name_part`` changed by ``edit(array)``."""
    m = onnx.load(str(src))
    hits = [i for i in m.graph.initializer if name_part in i.name]
    assert len(hits) == 1, [i.name for i in m.graph.initializer if i.name.startswith("head")]
    arr = numpy_helper.to_array(hits[0]).copy()
    edit(arr)
    hits[0].CopyFrom(numpy_helper.from_array(arr, hits[0].name))
    onnx.save(m, str(dst))
    return dst


def test_large_logit_model_is_large_and_has_logits_near_zero(big):
    logits = big["ref"]["logits"]
    assert 1e4 <= np.abs(logits).max() <= 1e5
    assert (np.abs(logits[np.arange(6), np.arange(6)]) < 1.0).all()


def test_correct_export_of_a_large_logit_model_passes(big):
    assert big["refused"] is None, big["refused"]
    res = big["report"].verification
    assert res.passed and res["logits"].scale_tol > 0
    # The check is meaningful: ONNX Runtime does differ from PyTorch beyond the fixed bound on some logit.
    ref = big["ref"]["logits"].astype(np.float64)
    act = run_onnx(big["path"], big["x"], ["logits"])["logits"].astype(np.float64)
    assert (np.abs(act - ref) > 1e-4 + 1e-3 * np.abs(ref)).any()
    assert res["logits"].max_scaled < 1e-5


def test_fp16_of_a_large_logit_model_passes(big, tmp_path):
    res = verify_onnx(convert_fp16(big["path"], tmp_path / "big.fp16.onnx"), big["ref"], big["x"], "fp16", show=False)
    assert res.passed, [o.reason for o in res.outputs]
    assert res["logits"].mean_abs > 0.05  # the fixed FP16 bound alone would refuse it


def test_int8_of_a_large_logit_model_passes(big, tmp_path):
    data = generate(tmp_path / "synth", classes=3, images=24, size=SIZE) / "JPEGImages"
    images = sorted(data.glob("*.jpg"))
    x = image_inputs(data, big["card"], 8)  # calibrated on images, so checked on images
    ref = reference_outputs(big["model"], x)
    q = quantize_int8(big["path"], tmp_path / "big.int8.onnx", images[8:], cache=tmp_path / "calib.json")
    res = verify_onnx(q, ref, x, "int8", show=False)
    assert res.passed, [o.reason for o in res.outputs]
    assert res["logits"].mean_abs > 0.5  # the fixed INT8 bound alone would refuse it


@pytest.mark.parametrize("relative", [1e-3, 2e-4])
def test_wrong_bias_fails(big, tmp_path, relative):
    # ½b is stored; shift class 0's logit by `relative` of the largest logit (2e-4 of it is ~8 here).
    shift = relative * float(np.abs(big["ref"]["logits"]).max())
    bad = edited(big["path"], tmp_path / "bad.onnx", "half_bias", lambda a: a.__setitem__(0, a[0] + shift))
    res = verify_onnx(bad, big["ref"], big["x"], "fp32", show=False)
    assert not res.passed and not res["logits"].passed
    with pytest.raises(VerificationError, match="logits"):
        res.raise_if_failed(str(bad))


def test_wrong_theta_row_fails(big, tmp_path):
    # One class's θ row off by 0.1%: its logits move by 0.1% of θᵀx, about 0.1% of the scale for this class.
    theta_part = big["ref"]["logits"] - big["model"].classifier.bias.detach().numpy()
    c = int(np.abs(theta_part).max(axis=0).argmax())
    bad = edited(big["path"], tmp_path / "bad.onnx", "half_theta", lambda a: a.__setitem__(c, a[c] * np.float32(1.001)))
    res = verify_onnx(bad, big["ref"], big["x"], "fp32", show=False)
    assert not res.passed and not res["logits"].passed
    assert "scale_tol*scale" in res["logits"].reason
