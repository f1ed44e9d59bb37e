"""INT8 layer sensitivity: how much quantizing one unit of the trunk, alone, moves the model on labelled data.

A *unit* is what the budgeted export may keep in floating point: a ``layer`` (one Conv, or one residual Add,
with the Relu it feeds) or a
``block`` (a residual block: its Convs, the Add and the Relus). For each unit and each scheme the FP32 file is
quantized with only that unit's nodes (reusing the calibration cache; a stale cache is an error, never a new
calibration) and run on the split. Two numbers come out: per-class ΔAP against the FP32 model (what the
budget is about) and the mean |Δlogit| (a cheap, far less noisy proxy that orders the search).

Why ``auto`` picks layers for small trunks and blocks for deep ones (measured on this 2-core machine, ORT
1.32): one candidate costs one quantization from the cache plus one pass over the split at about FP32 speed.
resnet18 at 64 px: 0.3 s + 1 ms/img, so 20 layers x 2 schemes on 140 images take ~20 s. resnet101 at 448 px:
2.5 s + 210 ms/img, so a 500-image split is ~110 s a candidate: 104 layers x 2 schemes would be ~6 h, the 34
blocks (33 + stem) ~2 h. Layers give finer, cheaper exclusions, so they are used while the trunk has at most
:data:`LAYER_LIMIT` Convs (resnet18/34), blocks above (resnet50/101).
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from der_deploy import metrics
from der_deploy.errors import DerError

from .budget_backends import EVAL_BATCH, Target
from .graph import head_node_names

GRANULARITIES = ("auto", "layer", "block")
LAYER_LIMIT = 40
SCHEMES = ("u8s8", "s8s8")


@dataclass(frozen=True)
class Unit:
    name: str  # torchvision-style: "layer2.0.conv1" / "layer2.0", "stem"
    nodes: tuple[str, ...]  # ONNX node names
    macs: int


def _pretty(weight: str) -> str:
    """backbone.5.0.conv1.weight -> layer2.0.conv1 (DER.backbone is the torchvision ResNet's children in order)."""
    name = weight[:-len(".weight")] if weight.endswith(".weight") else weight
    m = re.match(r"backbone\.(\d+)(.*)$", name)
    if not m:
        return name
    idx, rest = int(m.group(1)), m.group(2)
    if idx == 0:
        return "stem" + (rest or ".conv1")
    return f"layer{idx - 3}{rest}" if 4 <= idx <= 7 else name


def conv_macs(model) -> dict[str, int]:
    """Multiply-accumulates per Conv node at batch 1 (weight size x output pixels)."""
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    weights = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in weights:
            shape = dims.get(node.output[0], [])
            pixels = int(np.prod(shape[2:])) if len(shape) == 4 and all(shape[2:]) else 1
            out[node.name] = int(np.prod(weights[node.input[1]])) * pixels
    return out


def quant_units(model, granularity: str = "auto") -> tuple[list[Unit], str]:
    """The trunk's units in graph order, and the granularity used (``auto`` resolved)."""
    if granularity not in GRANULARITIES:
        raise DerError(f"unknown sensitivity granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}")
    head = set(head_node_names(model))
    nodes = [n for n in model.graph.node if n.name not in head]
    macs = conv_macs(model)
    convs = [n for n in nodes if n.op_type == "Conv"]
    if granularity == "auto":
        granularity = "layer" if len(convs) <= LAYER_LIMIT else "block"
    consumers: dict[str, list] = {}
    for n in nodes:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    if granularity == "layer":
        # A Conv or a residual Add, each with the Relu it feeds. The Adds matter: the last one's output is the
        # features X that the (unquantized) head reads, and its Q/DQ alone can cost a class an AP point.
        producer = {o: n for n in nodes for o in n.output}
        units = []
        for node in nodes:
            if node.op_type not in ("Conv", "Add"):
                continue
            after = consumers.get(node.output[0], [])
            extra = (after[0].name,) if len(after) == 1 and after[0].op_type == "Relu" else ()
            if node.op_type == "Conv":
                name = _pretty(node.input[1])
            else:
                conv = next((producer[t] for t in node.input if t in producer and producer[t].op_type == "Conv"), None)
                if conv is None:
                    continue
                name = _pretty(conv.input[1]).rsplit(".", 1)[0] + ".add"
                name = name.replace(".downsample.add", ".add")
            units.append(Unit(name, (node.name, *extra), macs.get(node.name, 0)))
        return units, granularity
    # block: a Conv belongs to backbone.I.J (or the stem); Add/Relu/MaxPool follow their first grouped input.
    group_of: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for n in nodes:
        if n.op_type == "Conv":
            parts = n.input[1].split(".")
            key = ".".join(parts[:3]) if parts[0] == "backbone" and parts[1] != "0" else "backbone.0"
        else:
            key = next((group_of[t] for t in n.input if t in group_of), None)
            if key is None:
                continue
        members.setdefault(key, []).append(n.name)
        for o in n.output:
            group_of[o] = key
    by_name = {n.name: n for n in nodes}
    units = [Unit(_pretty(k) if k != "backbone.0" else "stem", tuple(v),
                  sum(macs.get(x, 0) for x in v if by_name[x].op_type == "Conv")) for k, v in members.items()]
    return units, granularity


@dataclass
class SplitData:
    """One labelled split, decoded once, and the FP32 model's outputs on it (the reference)."""

    images: np.ndarray
    targets: np.ndarray
    classes: list[str]
    ref_logits: np.ndarray
    ref_ap: np.ndarray
    ref_map: float
    where: str


def load_split(fp32_onnx: str | Path, data: str | Path, split: str, *, data_format: str | None = None,
               max_images: int | None = None) -> SplitData:
    from concurrent.futures import ThreadPoolExecutor

    from der_deploy.datasets import open_dataset
    from der_deploy.images import load_and_preprocess, stack

    from .graph import read_onnx_card
    from .verify import run_onnx

    card = read_onnx_card(fp32_onnx)
    ds = open_dataset(data, split, format=data_format)
    if list(ds.classes) != card.classes:
        raise DerError(f"{data}: its classes ({', '.join(ds.classes[:5])}...) differ from the model's; give the "
                       "labelled data the model was trained for as --budget-data")
    n = len(ds) if max_images is None else min(len(ds), max_images)
    if n == 0:
        raise DerError(f"{data}: split {split!r} has no images; pick another with --split")
    paths = list(ds.paths)[:n]
    # Strict and ordered: the first unreadable file raises its ImageError (exact metrics need every image).
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        images = stack(list(pool.map(lambda path: load_and_preprocess(path, card), paths)))
    targets = ds.targets()[:n]
    ref = run_onnx(fp32_onnx, images, ["logits", "scores"], batch=EVAL_BATCH)
    return SplitData(images, targets, card.classes, ref["logits"], metrics.average_precision(ref["scores"], targets),
                     metrics.mean_average_precision(ref["scores"], targets), f"{Path(data).name}/{split}")


@dataclass
class Effect:
    """One quantized model against FP32 on the split; ΔAP in points (negative = worse)."""

    logit_err: float
    delta_ap_pt: np.ndarray
    delta_map_pt: float

    def worst(self) -> tuple[int, float]:
        """(class index, ΔAP) of the class that lost most (ties: first class)."""
        d = np.where(np.isnan(self.delta_ap_pt), np.inf, self.delta_ap_pt)
        i = int(np.argmin(d))
        return i, float(self.delta_ap_pt[i]) if np.isfinite(d[i]) else 0.0

    def summary(self, classes: Sequence[str]) -> dict:
        i, d = self.worst()
        return {"delta_map_pt": round(self.delta_map_pt, 4), "worst_class": classes[i], "worst_delta_ap_pt": round(d, 4),
                "logit_err": round(self.logit_err, 6)}


def effect(onnx_path: str | Path, split: SplitData, target: Target | None = None) -> Effect:
    """The file against the FP32 reference on the split, run on ``target`` (default ONNX Runtime CPU)."""
    out = (target or Target()).outputs(onnx_path, split.images)
    ap = metrics.average_precision(out["scores"], split.targets)
    return Effect(float(np.mean(np.abs(out["logits"] - split.ref_logits))), (ap - split.ref_ap) * 100.0,
                  (metrics.mean_average_precision(out["scores"], split.targets) - split.ref_map) * 100.0)


@dataclass
class Sensitivity:
    unit: Unit
    effects: dict[str, Effect]  # scheme -> effect of quantizing this unit alone

    @property
    def proxy(self) -> float:
        return max(e.logit_err for e in self.effects.values())


def measure_sensitivity(fp32_onnx: str | Path, calib, split: SplitData, units: Sequence[Unit], *, cache: str | Path,
                        calib_max: int, schemes: Sequence[str] = SCHEMES, targets: dict[str, Target] | None = None,
                        method: str = "minmax") -> list[Sensitivity]:
    """Quantize each unit alone (per scheme) from ``method``'s cached ranges and measure it on the scheme's target
    (default ONNX Runtime CPU); most sensitive first.

    Order: proxy descending, then unit name; the proxy is rounded to 1e-9 so float noise in the last bits
    cannot swap two units."""
    from der_deploy.progress import track

    from .quantize import quantize_int8

    out = []
    with tempfile.TemporaryDirectory(prefix="der-sens-") as tmp:
        for unit in track(units, f"INT8 sensitivity of {len(units)} units", total=len(units)):
            effects = {}
            for scheme in schemes:
                path = Path(tmp) / f"{scheme}.onnx"
                quantize_int8(fp32_onnx, path, calib, scheme=scheme, calib_max=calib_max, cache=cache, only=unit.nodes,
                              require_cached=True, method=method)
                effects[scheme] = effect(path, split, (targets or {}).get(scheme))
            out.append(Sensitivity(unit, effects))
    return sorted(out, key=lambda s: (-round(s.proxy, 9), s.unit.name))
