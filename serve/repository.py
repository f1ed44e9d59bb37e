"""An exported engine -> a Triton Inference Server model repository (``der-export --triton REPO``).

Layout (``name`` defaults to "der")::

    REPO/card.json                      the model card, for any client
    REPO/<name>/config.pbtxt            the engine: onnxruntime_onnx | tensorrt_plan | python (der_deploy.runtime)
    REPO/<name>/labels.txt              card classes in order (Triton's classification extension)
    REPO/<name>/1/model.onnx|model.plan (+ model.plan.json, the sidecar travels with the plan)
    REPO/<name>_preprocess/             Python backend: TYPE_STRING encoded image -> (3, H, W) float32
    REPO/<name>_postprocess/            Python backend: scores -> per-class decisions from the card thresholds
    REPO/<name>_e2e/config.pbtxt        ensemble: image bytes -> scores + labels (the entry clients call)

Every config.pbtxt is built as Triton's own ``ModelConfig`` protobuf (tritonclient.grpc.model_config_pb2)
and written with ``text_format``, then parsed back, so a written config always parses. The card JSON also
travels in each model's ``parameters["der_card"]``: the Python models read it from there and clients read it
over the protocol (model config), so nothing depends on files beside the repository.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from der_deploy.artifact.card import ModelCard
from der_deploy.artifact.keys import (TRITON_CARD_PARAM, TRITON_ENGINE_BACKEND_PARAM, TRITON_ENGINE_FILE_PARAM,
                                      TRITON_ENGINE_PRECISION_PARAM, TRITON_MAX_PIXELS_PARAM)
from der_deploy.artifact.profile import BatchProfile
from der_deploy.errors import ExportError

from .engine_spec import IMAGES, SCORES, EngineSpec, Tensor, inspect_engine

BACKENDS = ("onnxruntime", "tensorrt", "openvino", "python")
ENGINE_BACKENDS = ("ort", "openvino")  # what runs the .onnx inside the Python-backend engine model
PRECISIONS = ("fp32", "bf16")  # OpenVINO's inference precision (Triton's openvino backend, or the Python engine)
IMAGE_INPUT, LABELS = "image", "labels"
# The postprocessing model passes the engine's scores through as this output, so that the ensemble's "scores" and
# "labels" both come from its last step: Triton prunes the steps of a request for a subset of the outputs by walking
# back from the outputs not asked for, and it pruned the engine whenever an ensemble output was also fed to a later
# step (a request for "scores" or "labels" alone then ran no step: "unexpected deadlock").
SCORES_OUT = "scores_out"
LABELS_FILE = "labels.txt"
PRE, POST, E2E = "_preprocess", "_postprocess", "_e2e"
# Long enough for concurrent clients' requests to meet in one batch, short next to a CPU inference.
QUEUE_DELAY_US = 2000


def _pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ExportError("writing a Triton repository needs tritonclient (Triton's model config schema); "
                          "pip install 'der-deploy[serve]'") from None
    return model_config_pb2


# --- configs --------------------------------------------------------------------------------------
def _tensor(msg, t: Tensor, label_file: str | None = None):
    pb2 = _pb2()
    msg.name = t.name
    msg.data_type = pb2.DataType.Value(t.dtype)
    msg.dims.extend(t.dims)
    if label_file:
        msg.label_filename = label_file


def _common(cfg, card: ModelCard, max_batch: int) -> None:
    cfg.max_batch_size = max_batch
    cfg.parameters[TRITON_CARD_PARAM].string_value = card.to_json(indent=None)


def _batching(cfg, profile: BatchProfile, max_batch: int) -> None:
    # Preferred sizes: where the engine was tuned (TensorRT's OPT) and the largest batch.
    cfg.dynamic_batching.preferred_batch_size.extend(sorted({min(profile.opt, max_batch), max_batch}))
    cfg.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US


def _instances(cfg, count: int, kind: str | None) -> None:
    pb2 = _pb2()
    group = cfg.instance_group.add()
    group.count = count
    if kind is not None:  # unset = KIND_AUTO: a GPU when the server has one, else CPU
        group.kind = pb2.ModelInstanceGroup.Kind.Value(kind)


def _openvino_parameters(cfg, instances: int, precision: str) -> None:
    """Triton's openvino backend reads these from ``parameters`` (its README): one stream per instance, so that
    concurrent instances do not oversubscribe the cores; LATENCY for one instance, THROUGHPUT for several."""
    params = {"NUM_STREAMS": str(instances), "PERFORMANCE_HINT": "LATENCY" if instances == 1 else "THROUGHPUT"}
    if precision == "bf16":
        params["HINT_BF16"] = "YES"
    for key, value in params.items():
        cfg.parameters[key].string_value = value


def engine_config(spec: EngineSpec, name: str, backend: str, max_batch: int, instances: int,
                  engine_backend: str = "ort", precision: str = "fp32"):
    pb2 = _pb2()
    cfg = pb2.ModelConfig(name=name)
    if backend == "onnxruntime":
        cfg.platform, cfg.default_model_filename, kind = "onnxruntime_onnx", "model.onnx", None
    elif backend == "tensorrt":
        cfg.platform, cfg.default_model_filename, kind = "tensorrt_plan", "model.plan", "KIND_GPU"
    elif backend == "openvino":
        # Triton's OpenVINO backend reads the ONNX file itself (no IR conversion needed); CPU only.
        cfg.backend, cfg.default_model_filename, kind = "openvino", "model.onnx", "KIND_CPU"
        _openvino_parameters(cfg, instances, precision)
    else:
        # der_deploy.runtime in the Python backend: ONNX Runtime or OpenVINO on CPU, or TensorRT (a plan) on the GPU.
        cfg.backend, kind = "python", ("KIND_GPU" if spec.kind == "plan" else "KIND_CPU")
        cfg.parameters[TRITON_ENGINE_FILE_PARAM].string_value = "model.onnx" if spec.kind == "onnx" else "model.plan"
        if spec.kind == "onnx":
            cfg.parameters[TRITON_ENGINE_BACKEND_PARAM].string_value = engine_backend
            cfg.parameters[TRITON_ENGINE_PRECISION_PARAM].string_value = precision
    _common(cfg, spec.card, max_batch)
    for t in spec.inputs:
        _tensor(cfg.input.add(), t)
    for t in spec.outputs:
        _tensor(cfg.output.add(), t, LABELS_FILE if t.name == SCORES else None)
    _batching(cfg, spec.profile, max_batch)
    _instances(cfg, instances, kind)
    return cfg


def preprocess_config(name: str, card: ModelCard, max_batch: int, instances: int, profile: BatchProfile,
                      max_pixels: int):
    pb2 = _pb2()
    h, w = card.input_size
    cfg = pb2.ModelConfig(name=name, backend="python")
    _common(cfg, card, max_batch)
    # Written out even at the default so that operators see (and can edit) the limit in config.pbtxt.
    cfg.parameters[TRITON_MAX_PIXELS_PARAM].string_value = str(max_pixels)
    _tensor(cfg.input.add(), Tensor(IMAGE_INPUT, "TYPE_STRING", (1,)))
    _tensor(cfg.output.add(), Tensor(IMAGES, "TYPE_FP32", (3, h, w)))
    _batching(cfg, profile, max_batch)
    _instances(cfg, instances, "KIND_CPU")
    return cfg


def postprocess_config(name: str, card: ModelCard, max_batch: int, profile: BatchProfile):
    pb2 = _pb2()
    c = card.num_classes
    cfg = pb2.ModelConfig(name=name, backend="python")
    _common(cfg, card, max_batch)
    _tensor(cfg.input.add(), Tensor(SCORES, "TYPE_FP32", (c,)))
    _tensor(cfg.output.add(), Tensor(LABELS, "TYPE_BOOL", (c,)))
    _tensor(cfg.output.add(), Tensor(SCORES_OUT, "TYPE_FP32", (c,)))  # the input, unchanged (see SCORES_OUT)
    _batching(cfg, profile, max_batch)
    _instances(cfg, 1, "KIND_CPU")
    return cfg


def ensemble_config(name: str, engine: str, card: ModelCard, max_batch: int):
    pb2 = _pb2()
    c = card.num_classes
    cfg = pb2.ModelConfig(name=name + E2E, platform="ensemble")
    _common(cfg, card, max_batch)
    _tensor(cfg.input.add(), Tensor(IMAGE_INPUT, "TYPE_STRING", (1,)))
    _tensor(cfg.output.add(), Tensor(SCORES, "TYPE_FP32", (c,)), LABELS_FILE)
    _tensor(cfg.output.add(), Tensor(LABELS, "TYPE_BOOL", (c,)))
    steps = ((name + PRE, {IMAGE_INPUT: IMAGE_INPUT}, {IMAGES: "preprocessed"}),
             (engine, {IMAGES: "preprocessed"}, {SCORES: "engine_scores"}),
             (name + POST, {SCORES: "engine_scores"}, {LABELS: LABELS, SCORES_OUT: SCORES}))
    for model, inputs, outputs in steps:
        step = cfg.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    return cfg


def to_pbtxt(cfg) -> str:
    """Text form of a ModelConfig, checked by parsing it back (what Triton does with the file)."""
    from google.protobuf import text_format

    text = text_format.MessageToString(cfg)
    if parse_pbtxt(text) != cfg:
        raise ExportError(f"config of {cfg.name!r} does not survive a text round trip; this is a der-deploy bug")
    return text


def parse_pbtxt(text: str):
    """Parse config.pbtxt text against Triton's ModelConfig (raises text_format.ParseError)."""
    from google.protobuf import text_format

    return text_format.Parse(text, _pb2().ModelConfig())


def _shim(cls: str) -> str:
    return (f'"""Triton Python-backend model written by der-export; the code is der_deploy.serve.models."""\n'
            f"from der_deploy.serve.models import {cls} as TritonPythonModel  # noqa: F401\n")


@dataclass
class Repository:
    root: Path
    entry: str  # the ensemble clients call
    models: dict[str, str]  # model name -> what it is
    spec: EngineSpec
    max_batch: int


def write_repository(engine: str | Path, repo: str | Path, *, name: str = "der", backend: str | None = None,
                     max_batch: int | None = None, instances: int = 1, engine_backend: str = "ort",
                     precision: str = "fp32", max_pixels: int | None = None) -> Repository:
    """Write the model repository for ``engine`` (.onnx or .plan) under ``repo``; returns what was written.

    ``backend``: "onnxruntime" / "tensorrt" / "openvino" (Triton's native backends) or "python"
    (der_deploy.runtime inside Triton's Python backend); default: tensorrt for a .plan, onnxruntime for an .onnx.
    ``engine_backend`` ("ort" or "openvino") runs the .onnx in the Python-backend engine model; ``precision``
    ("fp32" or "bf16") is OpenVINO's inference precision, for the openvino backend or engine_backend="openvino".
    ``max_pixels``: the preprocessing model refuses (400) images decoding to more pixels (0: no limit; default:
    der_deploy.images.DEFAULT_MAX_PIXELS, as der-infer).
    Models of the same names in ``repo`` are replaced as a whole; other models there are left alone.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ExportError(f"Triton model name {name!r} must be letters, digits, '_', '.', '-' (e.g. der)")
    spec = inspect_engine(engine)
    backend = backend or ("tensorrt" if spec.kind == "plan" else "onnxruntime")
    if backend not in BACKENDS:
        raise ExportError(f"unknown Triton backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "tensorrt" and spec.kind != "plan":
        raise ExportError(f"{spec.path}: --triton-backend tensorrt needs a TensorRT plan; export with --trt "
                          "(or give the .plan), or use onnxruntime/python for an .onnx")
    if backend in ("onnxruntime", "openvino") and spec.kind != "onnx":
        raise ExportError(f"{spec.path}: a TensorRT plan is served with --triton-backend tensorrt (or python)")
    if engine_backend not in ENGINE_BACKENDS:
        raise ExportError(f"unknown engine backend {engine_backend!r}; use one of {', '.join(ENGINE_BACKENDS)}")
    if engine_backend != "ort" and not (backend == "python" and spec.kind == "onnx"):
        raise ExportError("--engine-backend chooses what runs the .onnx inside the Python-backend engine model; "
                          "add --triton-backend python (or use --triton-backend openvino for Triton's own)")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and not (backend == "openvino" or engine_backend == "openvino"):
        raise ExportError(f"--triton-precision {precision} is OpenVINO's inference precision; use "
                          "--triton-backend openvino, or --triton-backend python --engine-backend openvino")
    if instances < 1:
        raise ExportError(f"--instances must be >= 1, got {instances}")
    if max_pixels is None:
        from der_deploy.images import DEFAULT_MAX_PIXELS

        max_pixels = DEFAULT_MAX_PIXELS
    if max_pixels < 0:
        raise ExportError(f"--triton-max-pixels must be >= 0 (0: no limit), got {max_pixels}")
    mb = spec.profile.max if max_batch is None else max_batch
    if not 1 <= mb <= spec.profile.max:
        raise ExportError(f"--max-batch {mb} is outside the engine's batch range 1..{spec.profile.max}; "
                          "re-export with a larger --batch")
    if spec.kind == "plan" and spec.profile.min > 1:
        raise ExportError(f"{spec.path}: its profile starts at batch {spec.profile.min} but Triton sends batches "
                          "from 1; rebuild with der-export --trt --batch 1:MAX")
    card = spec.card
    root = Path(repo)
    if root.exists() and not root.is_dir():
        raise ExportError(f"{root}: exists and is not a folder; give a folder for the Triton repository")
    root.mkdir(parents=True, exist_ok=True)
    labels = "".join(c + "\n" for c in card.classes)
    # model -> (what it is, config, {relative path: text or a file to copy})
    engine_file = "1/model.onnx" if spec.kind == "onnx" else "1/model.plan"
    engine_files: dict[str, str | Path] = {LABELS_FILE: labels, engine_file: spec.path}
    if spec.sidecar is not None:
        engine_files["1/model.plan.json"] = spec.sidecar  # the plan's card and build facts travel with it
    if backend == "python":
        engine_files["1/model.py"] = _shim("Engine")
    models = {
        name: ("engine", engine_config(spec, name, backend, mb, instances, engine_backend, precision), engine_files),
        name + PRE: ("image bytes -> tensor",
                     preprocess_config(name + PRE, card, mb, instances, spec.profile, max_pixels),
                     {"1/model.py": _shim("Preprocess")}),
        name + POST: ("scores -> label decisions", postprocess_config(name + POST, card, mb, spec.profile),
                      {"1/model.py": _shim("Postprocess")}),
        name + E2E: ("ensemble entry", ensemble_config(name, name, card, mb), {LABELS_FILE: labels}),
    }
    from der_deploy.fileio import write_text

    staging = Path(tempfile.mkdtemp(prefix=".der-triton-", dir=root))
    try:
        for model, (_, cfg, files) in models.items():
            d = staging / model
            (d / "1").mkdir(parents=True)
            (d / "config.pbtxt").write_text(to_pbtxt(cfg), encoding="utf-8")
            for rel, content in files.items():
                if isinstance(content, Path):
                    shutil.copyfile(content, d / rel)
                else:
                    (d / rel).write_text(content, encoding="utf-8")
        for model in models:  # publish model by model: each folder appears whole
            dest = root / model
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            (staging / model).rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_text(root / "card.json", card.to_json() + "\n")
    return Repository(root, name + E2E, {m: v[0] for m, v in models.items()}, spec, mb)


def describe(rep: Repository) -> list[str]:
    """Lines for der-export's summary."""
    lines = [f"Triton repository {rep.root} (max batch {rep.max_batch}); clients call {rep.entry!r}:"]
    lines += [f"  {m:<24} {what}" for m, what in rep.models.items()]
    return lines + [f"  note: {n}" for n in rep.spec.notes]
