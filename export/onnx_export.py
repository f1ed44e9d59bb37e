"""Checkpoint -> verified FP32 ONNX with a dynamic batch, the fused DER head and the model card inside.

The ONNX I/O and graph helpers shared with the FP16 and INT8 steps are in :mod:`der_deploy.export.graph`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from der_deploy.artifact.card import ModelCard
from der_deploy.artifact.keys import BATCH_KEY, PRECISION_KEY
from der_deploy.artifact.profile import BatchProfile, parse_profile
from der_deploy.errors import ExportError
from der_deploy.fileio import check_writable

from .graph import _PROTOBUF_LIMIT, check_model, save_onnx, set_metadata, strip_node_metadata

if TYPE_CHECKING:
    import onnx

    from der_deploy.compare import CompareResult



@dataclass
class ExportReport:
    path: Path
    card: ModelCard
    seconds: float  # trace + write, verification excluded
    verification: "CompareResult | None"
    verify_seconds: float = 0.0


# --- export ----------------------------------------------------------------------------------------
def _load(checkpoint):
    """A checkpoint path, or an already loaded (model, card) pair."""
    if isinstance(checkpoint, tuple):
        return checkpoint
    from der_deploy.train.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)


def trace_to_onnx(model, card: ModelCard, *, opset: int | None, profile: BatchProfile, cadm: bool) -> "onnx.ModelProto":
    """torch.onnx (dynamo) export of backbone + FusedHead with a dynamic batch named 'batch'."""
    import torch

    from .fold import ExportModel

    net = ExportModel(model, cadm=cadm).eval()
    params = sum(t.numel() * t.element_size() for t in list(net.parameters()) + list(net.buffers()))
    if params >= _PROTOBUF_LIMIT:
        raise ExportError(f"model weights are {params / 2**30:.1f} GB, over ONNX's 2 GB single-file limit")
    h, w = model.input_size
    # Trace with batch >= 2 so that no batch size is specialised into the graph.
    example = torch.zeros(max(2, profile.min), 3, h, w)
    batch = torch.export.Dim("batch", min=1, max=max(profile.max, example.shape[0]))
    kwargs = {} if opset is None else {"opset_version": int(opset)}
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                net, (example,), dynamo=True, input_names=["images"], output_names=net.output_names,
                dynamic_shapes={"images": {0: batch}}, verbose=False, **kwargs,
            )
        onnx_model = program.model_proto
    except Exception as err:  # the exporter raises many kinds; the user needs the first line
        msg = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ExportError(f"torch.onnx export of {card.arch} failed ({msg})") from None
    strip_node_metadata(onnx_model)
    return onnx_model


def export_onnx_report(
    checkpoint,
    out_path: str | Path,
    *,
    opset: int | None = None,
    batch=(1, 32),
    cadm: bool = False,
    verify: bool = True,
    samples: str | Path | None = None,
    show: bool = True,
) -> ExportReport:
    """Export, check, verify against the training model in ONNX Runtime, then (only if all passed) write."""
    out_path = check_writable(out_path)
    profile = parse_profile(batch)
    start = time.perf_counter()
    model, card = _load(checkpoint)
    if cadm and model.head != "der":
        raise ExportError(f"{card.arch} baseline model has no CADMs; export it without --cadm")
    onnx_model = trace_to_onnx(model, card, opset=opset, profile=profile, cadm=cadm)
    set_metadata(onnx_model, card, **{PRECISION_KEY: "fp32", BATCH_KEY: str(profile)})
    onnx_model = check_model(onnx_model, str(out_path))
    report = ExportReport(out_path, card, time.perf_counter() - start, None)

    def check(tmp: Path) -> None:
        from .verify import reference_outputs, sample_inputs, verify_onnx

        t0 = time.perf_counter()
        images, source = sample_inputs(card, samples)
        ref = reference_outputs(model, images, cadm=cadm)
        report.verification = verify_onnx(tmp, ref, images, "fp32", title=f"verify {out_path.name} (FP32, {source})", show=show)
        report.verification.raise_if_failed(f"{out_path}: FP32 ONNX vs PyTorch")
        report.verify_seconds = time.perf_counter() - t0

    save_onnx(onnx_model, out_path, check if verify else None)
    return report


def export_onnx(
    checkpoint,
    out_path: str | Path,
    *,
    opset: int | None = None,
    batch=(1, 32),
    cadm: bool = False,
    verify: bool = True,
    samples: str | Path | None = None,
) -> Path:
    """Write a verified FP32 ONNX (see :func:`export_onnx_report` for the timings and error statistics)."""
    return export_onnx_report(checkpoint, out_path, opset=opset, batch=batch, cadm=cadm, verify=verify,
                              samples=samples, show=False).path
