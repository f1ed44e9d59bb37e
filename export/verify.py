"""Every written ONNX file is run in ONNX Runtime (CPU) and compared with the *training* model's outputs.

The reference is ``DER.forward`` (logits, sigmoid(logits), CADMs), not the export wrapper, so a pass proves
the fold and the export together. Failure is a :class:`VerificationError`, never a warning.

Tolerances per precision (see :data:`TOLERANCES`; the numbers behind them are in the export report):
- fp32: elementwise, atol 1e-4 on logits/CADMs, 1e-5 on scores, rtol 1e-3, plus 2e-5 of the sample's scale
  (der_deploy.compare: max|logit| of the row; for scores 1/4 of it, sigmoid's largest slope). Only summation
  order differs, and rounding error follows the magnitude of what was summed: an untrained ResNet-101 at 448
  has logits up to 7e4, where PyTorch and ONNX Runtime both sit ~0.05 (1e-6 of the scale) from an FP64 run,
  so a fixed atol fails a correct export on the logits near zero. A wrong fold is off by far more than 2e-5
  of the scale.
- fp16: the backbone runs in FP16 (11-bit mantissa), the head in FP32. Mean abs error of logits <= 0.05
  and max abs error of scores <= 0.02 (a score moving by 2 points at most), CADMs mean abs <= 0.05, or
  (any scale) mean error <= 2e-3 of the sample's scale (scores: max <= 2e-3 of 1/4 of the logit scale).
- int8: Q/DQ with calibrated ranges on the backbone, head unquantized. Mean abs error of logits <= 0.5 and of
  scores <= 0.05, CADMs mean abs <= 0.5, or mean error <= 0.1 of the sample's scale. A statistic passes when
  its abs, rel or scaled value is within bound (Polygraphy semantics plus the scale, der_deploy.compare).
Measured on the trained tiny model (resnet18 at 64, 16 real images, |logits| <= 5): fp32 logits max 4e-6;
fp16 logits mean 1e-4, scores max 7e-5; int8 u8s8 logits mean 0.04, scores mean 0.009; s8s8 0.08 / 0.018.
Relative to the row's scale (random resnet18 at 64, logits up to 4e4 or 2, the same ratios at both scales):
fp32 max 1.2e-6, fp16 mean 1.2e-4, int8 u8s8 mean 0.011, s8s8 mean 0.016; untrained ResNet-101 at 448 (logits
up to 7.6e4): fp32 max 2.4e-6 (max abs 0.15).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from der_deploy.artifact.card import ModelCard
from der_deploy.compare import CompareResult, compare_outputs
from der_deploy.errors import DerError, EngineError

# scale_of: a score's error is judged against 1/4 of its row's logit scale (|dσ/dx| <= 1/4).
_SCORES_FROM_LOGITS = {"scores": ("logits", 0.25)}
TOLERANCES: dict[str, dict] = {
    "fp32": dict(atol={"logits": 1e-4, "scores": 1e-5, "cadm": 1e-4}, rtol=1e-3, check_error_stat="elemwise",
                 scale_tol=2e-5, scale_of=_SCORES_FROM_LOGITS),
    "fp16": dict(atol={"logits": 0.05, "scores": 0.02, "cadm": 0.05}, rtol={"*": 0.02},
                 check_error_stat={"logits": "mean", "scores": "max", "cadm": "mean"},
                 scale_tol=2e-3, scale_of=_SCORES_FROM_LOGITS),
    "int8": dict(atol={"logits": 0.5, "scores": 0.05, "cadm": 0.5}, rtol={"*": 0.1}, check_error_stat="mean",
                 scale_tol=0.1, scale_of=_SCORES_FROM_LOGITS),
}
BATCH = 8


def generated_inputs(card: ModelCard, count: int = 8, seed: int = 0) -> np.ndarray:
    """Deterministic inputs in the normalised domain: random normal ones plus a few structured images
    (the mean image, a ramp, a checkerboard) that exercise large flat and high-contrast regions."""
    h, w = card.input_size
    rng = np.random.default_rng(seed)
    n_struct = min(3, max(count - 1, 0))
    out = rng.standard_normal((count, 3, h, w)).astype(np.float32)
    structured = [
        np.zeros((3, h, w), np.float32),  # the dataset-mean image
        np.broadcast_to(np.linspace(-2, 2, w, dtype=np.float32), (3, h, w)),
        np.where((np.add.outer(np.arange(h), np.arange(w)) // 8) % 2 == 0, 1.5, -1.5).astype(np.float32)[None].repeat(3, 0),
    ]
    for i in range(n_struct):
        out[count - n_struct + i] = structured[i]
    return out


def image_inputs(folder: str | Path, card: ModelCard, count: int = 8) -> np.ndarray:
    from der_deploy.images import find_images, load_and_preprocess, stack

    paths = find_images(folder)[:count]
    if not paths:
        raise DerError(f"no images in {folder}; give a folder of .jpg/.png images as samples")
    return stack([load_and_preprocess(p, card) for p in paths])


def sample_inputs(card: ModelCard, samples: str | Path | None = None, count: int = 8) -> tuple[np.ndarray, str]:
    """(N, 3, H, W) float32 inputs and a description: real images from ``samples`` if given, else generated."""
    if samples is not None:
        images = image_inputs(samples, card, count)
        return images, f"{len(images)} images from {Path(samples).name}"
    return generated_inputs(card, count), f"{count} generated inputs"


def reference_outputs(model, images: np.ndarray, *, cadm: bool = False) -> dict[str, np.ndarray]:
    """The training model's outputs: logits (Eq. 14), scores = sigmoid(logits) and (with ``cadm``) A = θᵀX."""
    import torch

    if isinstance(model, (str, Path)):
        from der_deploy.train.checkpoint import load_checkpoint

        model, _ = load_checkpoint(model)
    model.eval()
    outs: dict[str, list] = {"logits": [], "scores": [], "cadm": []}
    with torch.no_grad():
        for i in range(0, len(images), BATCH):
            y = model(torch.from_numpy(np.ascontiguousarray(images[i:i + BATCH])))
            outs["logits"].append(y.logits.numpy())
            outs["scores"].append(torch.sigmoid(y.logits).numpy())
            if cadm:
                outs["cadm"].append(y.cadm.numpy())
    return {k: np.concatenate(v) for k, v in outs.items() if v}


def run_onnx(path: str | Path, images: np.ndarray, names: list[str] | None = None, batch: int = BATCH) -> dict[str, np.ndarray]:
    """Run ``images`` through the file in ONNX Runtime CPU, ``batch`` at a time."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise EngineError(f"{path}: ONNX Runtime cannot load it ({str(err).strip().splitlines()[0][:300]})") from None
    names = names or [o.name for o in sess.get_outputs()]
    parts: dict[str, list] = {n: [] for n in names}
    for i in range(0, len(images), batch):
        for n, v in zip(names, sess.run(names, {"images": np.ascontiguousarray(images[i:i + batch])})):
            parts[n].append(v)
    return {n: np.concatenate(v) for n, v in parts.items()}


def verify_onnx(
    onnx_path: str | Path,
    model,
    inputs: np.ndarray,
    tolerances: str | Mapping = "fp32",
    *,
    cadm: bool | None = None,
    title: str = "",
    show: bool = True,
) -> CompareResult:
    """Compare the ONNX file's outputs on ``inputs`` with the training model's.

    ``model`` is a DER module, a checkpoint path, or an already computed reference dict (from
    :func:`reference_outputs`). ``tolerances`` is a key of :data:`TOLERANCES` or compare_outputs kwargs.
    Returns the result (not raised; call ``.raise_if_failed``) and prints its table to stderr if ``show``.
    """
    if isinstance(model, Mapping):
        ref = dict(model)
    else:
        if cadm is None:
            import onnx

            cadm = any(o.name == "cadm" for o in onnx.load(str(onnx_path), load_external_data=False).graph.output)
        ref = reference_outputs(model, inputs, cadm=cadm)
    tol = TOLERANCES[tolerances] if isinstance(tolerances, str) else dict(tolerances)
    actual = run_onnx(onnx_path, inputs, list(ref))
    result = compare_outputs(ref, actual, title=title, **tol)
    if show:
        from der_deploy.progress import err_console

        err_console.print(result.table())
    return result
