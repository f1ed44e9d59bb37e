"""Triton Python-backend models of a der-export repository (see der_deploy.serve.repository).

Each ``REPO/<model>/1/model.py`` is a one-line import of a class here, so the served code is the same
der_deploy the other tools run: :class:`Preprocess` decodes with ``der_deploy.images`` (the decoding policy
of ``load_image``, shared through ``decode_image``), :class:`Engine` runs ``der_deploy.runtime``'s runner and
:class:`Postprocess` applies the card's per-class thresholds as ``Predictor.decide`` does (``score >= t``).

``triton_python_backend_utils`` exists only inside Triton's Python-backend stub, so it is imported lazily.
A bad request gets an error response of its own; the other requests of the batch are still answered.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from der_deploy.artifact.keys import (TRITON_CARD_PARAM, TRITON_ENGINE_BACKEND_PARAM, TRITON_ENGINE_FILE_PARAM,
                                      TRITON_ENGINE_PRECISION_PARAM, TRITON_MAX_PIXELS_PARAM)

ITEM = "request item"
# The preprocessing model's TRITON_MAX_PIXELS_PARAM (written by der-export --triton-max-pixels): its pixel limit per
# image (decimal; 0: only the decompression-bomb limit). Absent (older repositories): DEFAULT_MAX_PIXELS.


def _pb():
    import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend stub

    return pb_utils


def _config(args: dict[str, Any]) -> dict[str, Any]:
    return json.loads(args["model_config"])


def _param(cfg: dict[str, Any], key: str) -> str:
    try:
        return cfg["parameters"][key]["string_value"]
    except KeyError:
        raise RuntimeError(f"model {cfg.get('name')!r}: config.pbtxt has no parameters[{key!r}]; "
                           "re-write the repository with der-export --triton") from None


def _card(cfg: dict[str, Any]):
    from der_deploy.artifact.card import ModelCard

    return ModelCard.from_json(_param(cfg, TRITON_CARD_PARAM))


def _error(pb, message: str, invalid: bool = True):
    # INVALID_ARG makes HTTP answer 400 (the client's input), not 500; older stubs lack the code argument.
    code = getattr(pb.TritonError, "INVALID_ARG", None) if invalid else None
    err = pb.TritonError(message) if code is None else pb.TritonError(message, code)
    return pb.InferenceResponse(output_tensors=[], error=err)


def _input(pb, request, name: str) -> np.ndarray:
    tensor = pb.get_input_tensor_by_name(request, name)
    if tensor is None:  # Triton checks required inputs; this guards a hand-edited config
        raise ValueError(f"missing input {name!r}")
    return tensor.as_numpy()


class Preprocess:
    """TYPE_STRING [B, 1] encoded images -> ``images`` float32 [B, 3, H, W] (der_deploy.images)."""

    def initialize(self, args: dict[str, Any]) -> None:
        from der_deploy.images import DEFAULT_MAX_PIXELS, decode_target

        cfg = _config(args)
        self.card = _card(cfg)
        self.draft = decode_target(self.card)
        text = cfg.get("parameters", {}).get(TRITON_MAX_PIXELS_PARAM, {}).get("string_value", "")
        try:
            self.max_pixels = int(text) if text.strip() else DEFAULT_MAX_PIXELS
        except ValueError:
            self.max_pixels = -1
        if self.max_pixels < 0:
            raise RuntimeError(f"model {cfg.get('name')!r}: parameters[{TRITON_MAX_PIXELS_PARAM!r}] must be a "
                               f"whole number >= 0 (0: no limit), got {text!r}")

    def execute(self, requests):
        from der_deploy.errors import ImageError
        from der_deploy.images import decode_image, preprocess, stack

        pb = _pb()
        responses = []
        for request in requests:
            try:
                items = _input(pb, request, "image")
                flat = items.reshape(-1)
                # One image decoded at a time, each refused from its header above max_pixels: bounded memory.
                arrays = [preprocess(decode_image(_as_bytes(v), f"{ITEM} {i}", draft=self.draft,
                                                  max_pixels=self.max_pixels), self.card)
                          for i, v in enumerate(flat)]
                out = stack(arrays).reshape(*items.shape[:-1], 3, *self.card.input_size)
                responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor("images", out)]))
            except (ImageError, ValueError) as err:
                responses.append(_error(pb, str(err)))
        return responses


def _as_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):  # a client that sent text: decode_image will call it what it is
        return value.encode("utf-8", "surrogateescape")
    raise ValueError(f"expected encoded image bytes, got {type(value).__name__}")


class Engine:
    """The engine step run by der_deploy.runtime (ONNX Runtime for model.onnx, TensorRT for model.plan)."""

    def initialize(self, args: dict[str, Any]) -> None:
        from der_deploy.backends.registry import open_runner

        cfg = _config(args)
        path = Path(args["model_repository"]) / str(args["model_version"]) / _param(cfg, TRITON_ENGINE_FILE_PARAM)
        self.outputs = [o["name"] for o in cfg["output"]]
        params = cfg.get("parameters", {})  # repositories written before OpenVINO existed have neither key
        backend = params.get(TRITON_ENGINE_BACKEND_PARAM, {}).get("string_value", "ort")
        if backend == "openvino":
            precision = params.get(TRITON_ENGINE_PRECISION_PARAM, {}).get("string_value", "fp32")
            self.runner = open_runner(path, backend="openvino", precision=precision)
        else:
            self.runner = open_runner(path)
        self.runner.activate()

    def execute(self, requests):
        pb = _pb()
        arrays, sizes = [], []
        for request in requests:  # Triton has checked dtype and shape against config.pbtxt
            x = _input(pb, request, "images")
            arrays.append(x)
            sizes.append(x.shape[0])
        try:  # one engine call for the whole dynamic batch
            out = self.runner.infer({"images": np.ascontiguousarray(np.concatenate(arrays), dtype=np.float32)})
        except Exception as err:  # a failed engine call answers every request, never kills the instance
            return [_error(pb, f"engine failed: {err}", invalid=False) for _ in requests]
        responses, start = [], 0
        for n in sizes:
            tensors = [pb.Tensor(name, np.ascontiguousarray(out[name][start:start + n])) for name in self.outputs]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        self.runner.deactivate()


class Postprocess:
    """``scores`` [B, C] -> ``labels`` bool [B, C]: score >= the card's threshold for that class, and
    ``scores_out``: the scores unchanged (the ensemble's ``scores``; see repository.SCORES_OUT)."""

    def initialize(self, args: dict[str, Any]) -> None:
        self.thresholds = np.asarray(_card(_config(args)).thresholds, dtype=np.float64)
        self.outputs = [o["name"] for o in _config(args)["output"]]

    def execute(self, requests):
        pb = _pb()
        responses = []
        for request in requests:
            scores = _input(pb, request, "scores")
            # Only what was asked for (none named, or an older stub without requested_output_names: all).
            asked = getattr(request, "requested_output_names", None)
            wanted = (set(asked()) if asked is not None else set()) or set(self.outputs)
            tensors = []
            if "labels" in wanted:  # compared in float64 as Predictor.decide
                tensors.append(pb.Tensor("labels", scores.astype(np.float64) >= self.thresholds))
            if "scores_out" in wanted:
                tensors.append(pb.Tensor("scores_out", np.ascontiguousarray(scores, dtype=np.float32)))
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses
