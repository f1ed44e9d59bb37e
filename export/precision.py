"""FP32 ONNX -> mixed-precision FP16 ONNX with float32 inputs and outputs (what TensorRT 11 builds from).

Which nodes stay FP32, and why:
- the whole fused head (:func:`head_node_names`: GMP ReduceMax, Concat, the ½θ MatMul, Split, the Adds,
  the stream-2 ReduceMax, Sigmoid and the CADM Mul/Reshape). Logits are a sum of two maxima and a bias; in
  FP16 a logit of 10 is only good to ~0.004 and the MatMul would sum d=512..2048 products in FP16 on
  backends that do not widen. The head is <0.2 % of the FLOPs (resnet101 at 448: 32 MFLOP of 31 GFLOP),
  so keeping it FP32 costs nothing. θ therefore stays a single FP32 initializer.
- in the trunk, every op in :data:`FP16_OPS` (those with FP16 kernels in ORT and TensorRT whose FP16 result is
  as good as its inputs: Conv with folded BN, Relu, pooling, Add, the activations of MobileNet/EfficientNet/RegNet
  such as HardSwish, Sigmoid and the squeeze-excitation ReduceMean, MatMul/Gemm) runs in FP16; any other op stays
  FP32 behind Casts (e.g. ConvNeXt's LayerNormalization, whose variance underflows in FP16). For a ResNet that is
  one Cast converting the float32 input and one widening the features X before the head.
The converter is written here rather than using onnxruntime.transformers.float16, whose output was not
topologically sorted and had inconsistent value_info on the dynamo graph (ORT 1.32).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from der_deploy.errors import ExportError

from der_deploy.artifact.keys import PRECISION_KEY

from .graph import card_from_model, check_model, head_node_names, load_onnx, metadata, save_onnx, set_metadata

# Ops allowed to run in FP16 (type-generic ops whose FP16 kernels exist in ORT CPU and TensorRT).
FP16_OPS = frozenset({
    "Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Add", "Sub", "Mul", "Div",
    "BatchNormalization", "Concat", "Reshape", "Flatten", "Identity", "Transpose", "Split", "Slice", "Squeeze",
    "Unsqueeze", "Clip", "Shape", "Constant", "Pad",
    "Sigmoid", "HardSigmoid", "HardSwish", "ReduceMean", "MatMul", "Gemm", "Erf", "Gelu",
})
_FP16_MAX = float(np.finfo(np.float16).max)


def _half_array(arr: np.ndarray, name: str) -> np.ndarray:
    if np.isfinite(arr).all() and np.abs(arr).max(initial=0.0) > _FP16_MAX:
        raise ExportError(f"weight {name!r} exceeds the FP16 range (|w| > 65504); this model cannot be converted to FP16")
    return arr.astype(np.float16)


def to_fp16(model, half: set[str] | None = None):
    """Return a new ModelProto: non-head nodes (or just the nodes named in ``half``) in FP16 where their op is in
    :data:`FP16_OPS`; the rest, and the graph I/O, in FP32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({i.name: i.data_type for i in graph.initializer})
    keep = set(head_node_names(model))
    is_half = {n.name: (n.name in half if half is not None else n.name not in keep) and n.op_type in FP16_OPS
               for n in graph.node}
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, set[bool]] = {}
    for node in graph.node:
        for i in node.input:
            users.setdefault(i, set()).add(is_half[node.name])
    graph_outputs = {o.name for o in graph.output}

    def is_float(t: str) -> bool:
        return types.get(t) == TensorProto.FLOAT

    new_inits, casts = [], {}
    for name, init in inits.items():  # weights read only by FP16 nodes become FP16 in place
        if init.data_type == TensorProto.FLOAT and users.get(name) == {True}:
            new_inits.append(numpy_helper.from_array(_half_array(numpy_helper.to_array(init), name), name))
        else:
            new_inits.append(init)
            if init.data_type == TensorProto.FLOAT and True in users.get(name, ()):  # shared: FP16 copy
                new_inits.append(numpy_helper.from_array(_half_array(numpy_helper.to_array(init), name), name + "_fp16"))
                casts[(name, TensorProto.FLOAT16)] = name + "_fp16"

    nodes = []

    def cast(t: str, to: int) -> str:
        key = (t, to)
        if key not in casts:
            out = f"{t}_{'fp16' if to == TensorProto.FLOAT16 else 'fp32'}"
            nodes.append(helper.make_node("Cast", [t], [out], name=f"cast_{out}", to=to))
            casts[key] = out
        return casts[key]

    # FP16-produced graph outputs get renamed so the float32 Cast can carry the public name.
    out_rename = {o: o + "_fp16" for o in graph_outputs if o in producer and is_half[producer[o].name] and is_float(o)}
    for node in graph.node:
        half = is_half[node.name]
        for k, t in enumerate(node.input):
            if not t or not is_float(t) or (t in inits and half and users.get(t) == {True}):
                continue
            from_half = t in producer and is_half[producer[t].name]
            t_now = out_rename.get(t, t)
            if half and not from_half:
                node.input[k] = cast(t_now, TensorProto.FLOAT16)
            elif not half and from_half:
                node.input[k] = cast(t_now, TensorProto.FLOAT)
            else:
                node.input[k] = t_now
        if half:
            for k, t in enumerate(node.output):
                node.output[k] = out_rename.get(t, t)
            for attr in node.attribute:  # Constant values and Cast targets follow the region's precision
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(numpy_helper.from_array(_half_array(numpy_helper.to_array(attr.t), node.name), attr.t.name))
        nodes.append(node)
    for public, renamed in out_rename.items():
        nodes.append(helper.make_node("Cast", [renamed], [public], name=f"cast_{public}", to=TensorProto.FLOAT))

    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:], out.graph.initializer[:], out.graph.value_info[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(new_inits)
    return out


def convert_fp16(src: str | Path, dst: str | Path, *, verify: Callable[[Path], object] | None = None) -> Path:
    """Write the mixed-precision FP16 variant of der-export's FP32 ``src`` to ``dst`` (atomically).

    The card and other der_deploy metadata are carried over; ``verify(tmp_path)`` may veto the write.
    """
    model = load_onnx(src)
    card = card_from_model(model, str(src))
    if metadata(model).get(PRECISION_KEY, "fp32") != "fp32":
        raise ExportError(f"{src}: is a {metadata(model)[PRECISION_KEY]} model; convert the FP32 export to FP16")
    half = to_fp16(model)
    set_metadata(half, card, **{PRECISION_KEY: "fp16"})
    half = check_model(half, str(dst))
    return save_onnx(half, dst, verify)
