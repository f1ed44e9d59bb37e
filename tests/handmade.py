"""Handmade ONNX models that follow the der-export I/O contract, plus images (fixtures for tests/runtime and
tests/backends, which import them in their conftest.py).

The graph mirrors the DER head on a toy backbone, so tests can check the runtime against plain numpy:
X = ReLU(conv4x4/stride4(images)); cadm = θ·X (Eq. 2); scls = max_hw cadm (Eq. 13);
fcls = θ·max_hw X + b (Eq. 12); logits = (fcls + scls) / 2 (Eq. 14); scores = sigmoid(logits).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from der_deploy.artifact.card import ONNX_METADATA_KEY, ModelCard

SIZE = 32  # input H = W
CLASSES = ["cat", "dog", "red car", "tree/bush"]
D = 6  # feature channels


@dataclass
class TinyModel:
    path: Path
    card: ModelCard
    w1: np.ndarray  # (D, 3, 4, 4)
    theta: np.ndarray  # (C, D)
    bias: np.ndarray  # (C,)

    def reference(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The same graph in float64 numpy."""
        x = np.asarray(x, np.float64)
        n = x.shape[0]
        patches = x.reshape(n, 3, SIZE // 4, 4, SIZE // 4, 4)
        feats = np.maximum(np.einsum("nchpwq,dcpq->ndhw", patches, self.w1), 0.0)
        cadm = np.einsum("cd,ndhw->nchw", self.theta, feats)
        scls = cadm.max(axis=(2, 3))
        fcls = feats.max(axis=(2, 3)) @ self.theta.T + self.bias
        logits = 0.5 * (fcls + scls)
        return {"logits": logits, "scores": 1.0 / (1.0 + np.exp(-logits)), "cadm": cadm}


def build_tiny(path: Path, *, classes=CLASSES, thresholds=None, batch="N", cadm=True, card=True,
               card_size=(SIZE, SIZE), seed=0) -> TinyModel:
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(seed)
    c = len(classes)
    w1 = rng.normal(0.0, 0.15, size=(D, 3, 4, 4)).astype(np.float32)
    theta = rng.normal(0.0, 0.6, size=(c, D)).astype(np.float32)
    bias = np.linspace(-0.6, 0.6, c).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(theta.reshape(c, D, 1, 1), "theta4"),
             numpy_helper.from_array(theta, "theta"), numpy_helper.from_array(bias, "bias"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["conv"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Relu", ["conv"], ["feats"]),
        helper.make_node("Conv", ["feats", "theta4"], ["cadm"], kernel_shape=[1, 1]),
        helper.make_node("ReduceMax", ["cadm"], ["scls"], axes=[2, 3], keepdims=0),
        helper.make_node("ReduceMax", ["feats"], ["gmp"], axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["gmp", "theta", "bias"], ["fcls"], transB=1),
        helper.make_node("Add", ["fcls", "scls"], ["sum"]),
        helper.make_node("Mul", ["sum", "half"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    h = SIZE // 4
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, c]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, c])]
    if cadm:
        outputs.append(helper.make_tensor_value_info("cadm", TensorProto.FLOAT, [batch, c, h, h]))
    graph = helper.make_graph(nodes, "tiny_der", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                [batch, 3, SIZE, SIZE])],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="der-deploy-tests")
    model.ir_version = 8
    mc = ModelCard(classes=list(classes), arch="toy", input_size=tuple(card_size), thresholds=thresholds)
    if card:
        helper.set_model_props(model, {ONNX_METADATA_KEY: mc.to_json(indent=None), "other": "x"})
    save(model, str(path))
    return TinyModel(Path(path), mc, w1, theta, bias)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
    return build_tiny(tmp_path_factory.mktemp("tiny") / "tiny.onnx", thresholds=[0.3, 0.5, 0.6, 0.75])


@pytest.fixture(scope="session")
def fixed_batch_model(tmp_path_factory) -> TinyModel:
    return build_tiny(tmp_path_factory.mktemp("fixed") / "fixed4.onnx", batch=4)


@pytest.fixture(scope="session")
def no_cadm_model(tmp_path_factory) -> TinyModel:
    return build_tiny(tmp_path_factory.mktemp("nocadm") / "nocadm.onnx", cadm=False)


def write_image(path: Path, seed: int, size=(48, 40)) -> Path:
    """A blocky random picture (PNG/JPEG by suffix) so different files give different scores."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize(size, Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_bad(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "text":
        path.write_text("this is not an image\n")
    else:  # truncated JPEG
        write_image(path, 999, size=(64, 64))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def image_folder(tmp_path) -> tuple[Path, list[Path], set[Path]]:
    """A folder tree with 14 good images (PNG + JPEG, varied sizes) and 2 bad ones, in find_images order."""
    root = tmp_path / "imgs"
    bad = {write_bad(root / "b" / "broken.jpg", "truncated"), write_bad(root / "a" / "notes.png", "text")}
    for i in range(7):
        write_image(root / "a" / f"img{i:02d}.png", i, size=(40 + 3 * i, 36 + 2 * i))
        write_image(root / "b" / f"pic{i:02d}.jpg", 100 + i, size=(50, 30 + i))
    from der_deploy.images import find_images

    return root, find_images([root]), bad


@pytest.fixture(scope="session")
def make_tiny():
    """The model builder, for tests that need a variant (no card, other classes, fixed batch...)."""
    return build_tiny


@pytest.fixture(scope="session")
def make_image():
    return write_image


@pytest.fixture(scope="session")
def make_bad():
    return write_bad
