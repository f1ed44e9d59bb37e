"""Where the INT8 budget is checked and timed: the backend the budgeted file will be deployed on.

``ort`` (the default): the U8S8 file runs on ONNX Runtime CPU, whose kernels keep the excluded units in FP32.
``openvino``: the same U8S8 Q/DQ file runs on OpenVINO CPU, compiled with ``INFERENCE_PRECISION_HINT`` = the
fallback precision: the quantized layers run INT8, everything left in floating point (the excluded units and the
head) runs in ``fp32`` or ``bf16``. The file is identical for both precisions; the precision is a runtime choice
that the plan records, so deploy it with ``--backend openvino --precision <the plan's fallback precision>``.
On OpenVINO the INT8 kernels differ from ONNX Runtime's (rounding, u8 handling), so the same file's per-class AP
differs between the two: that is why the check must run where the file will.

The S8S8 file is TensorRT's. With ``ort`` it is checked too, on ONNX Runtime CPU with its excluded units in FP16 (as
the strongly typed engine runs them) -- a stand-in for a GPU that is not here. With ``openvino`` it is not: the budget
is about the file OpenVINO runs, and meeting TensorRT's budget as well would keep layers in floating point that
OpenVINO does not need there; the S8S8 file then carries the same exclusions, unchecked (``checked_on`` in the plan
says which files were checked). For a TensorRT deployment, budget with ``ort``.

Speeds are images/s at batch 8, measured interleaved; ONNX Runtime FP32 stays the 1.00x reference on both backends
so that ratios compare (OpenVINO FP32 is shown beside it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from der_deploy.errors import BackendUnavailable, DerError

BACKENDS = ("ort", "openvino")
FALLBACK_PRECISIONS = ("fp32", "bf16")
EVAL_BATCH = 32


def check_budget_backend(backend: str, fallback_precision: str) -> None:
    """One line, before any work, when the budget cannot run as asked: unknown names, bf16 on ONNX Runtime,
    OpenVINO missing, or bf16 on a CPU without native BF16 (OpenVINO would quietly run FP32 there)."""
    if backend not in BACKENDS:
        raise DerError(f"unknown --budget-backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if fallback_precision not in FALLBACK_PRECISIONS:
        raise DerError(f"unknown --budget-fallback-precision {fallback_precision!r}; use one of "
                       f"{', '.join(FALLBACK_PRECISIONS)}")
    if backend == "ort":
        if fallback_precision != "fp32":
            raise DerError(f"--budget-fallback-precision {fallback_precision} needs --budget-backend openvino "
                           "(ONNX Runtime CPU runs the layers kept out of INT8 in FP32)")
        return
    from der_deploy.backends.openvino.cpu import FLAGS, NATIVE, cpu_info, native_precisions, openvino_capabilities
    from der_deploy.backends.openvino.core import import_openvino

    import_openvino()  # BackendUnavailable with the pip line
    if fallback_precision == "fp32":
        return
    info, caps = cpu_info(), openvino_capabilities()
    if fallback_precision in native_precisions(caps, info):
        return
    flags, _ = NATIVE[fallback_precision]
    wanted = " or ".join(FLAGS[f] for f in flags)
    if fallback_precision in info.native_by_flags():
        why = f"this OpenVINO does not list {fallback_precision.upper()} for this CPU ({info.model})"
    else:
        why = f"this CPU ({info.model}) has no {wanted}, so OpenVINO cannot run {fallback_precision} natively"
    raise BackendUnavailable(f"--budget-fallback-precision {fallback_precision}: {why}; use "
                             f"--budget-fallback-precision fp32, or run the search on a CPU with {wanted}")


@dataclass(frozen=True)
class Target:
    """A backend and the precision its floating-point layers run in."""

    backend: str = "ort"
    precision: str = "fp32"

    def label(self) -> str:
        """What ran, with the version, for the plan: "onnxruntime 1.32.0 CPU" / "openvino 2026.4.1 CPU fp32"."""
        if self.backend == "ort":
            import onnxruntime

            return f"onnxruntime {onnxruntime.__version__} CPU"
        from der_deploy.backends.openvino.core import import_openvino

        return f"openvino {import_openvino().get_version().split('-')[0]} CPU {self.precision}"

    def outputs(self, path: str | Path, images: np.ndarray, batch: int = EVAL_BATCH) -> dict[str, np.ndarray]:
        """logits and scores of ``images`` through the file, ``batch`` at a time."""
        names = ["logits", "scores"]
        if self.backend == "ort":
            from .verify import run_onnx

            return run_onnx(path, images, names, batch=batch)
        from der_deploy.backends.openvino.runner import OpenVinoRunner

        parts: dict[str, list] = {n: [] for n in names}
        with OpenVinoRunner(path, precision=self.precision, mode="latency") as runner:
            for i in range(0, len(images), batch):
                out = runner.infer({"images": images[i:i + batch]})
                for n in names:
                    parts[n].append(np.array(out[n]))
        return {n: np.concatenate(v) for n, v in parts.items()}

    def open(self, path: str | Path) -> tuple[Callable[[np.ndarray], object], Callable[[], None]]:
        """(run one batch, close) for timing."""
        if self.backend == "ort":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            return (lambda x: sess.run(["logits"], {"images": x})), (lambda: None)
        from der_deploy.backends.openvino.runner import OpenVinoRunner

        runner = OpenVinoRunner(path, precision=self.precision, mode="latency").activate()
        return (lambda x: runner.infer({"images": x})), runner.deactivate


ORT_FP32 = Target()
# Pause before each timed block: the previous file's worker threads spin-wait after their last run (ONNX Runtime's
# intra-op pool, OpenVINO's TBB arena) and took the cores from whatever ran next -- the same OpenVINO file measured
# 255 img/s right after ONNX Runtime and 549 two slots later in one interleaved run here.
SETTLE_S = 0.05


def measure_speeds(paths: Mapping[str, str | Path | tuple[str | Path, Target]], x: np.ndarray, *, rounds: int = 12,
                   iters: int = 3, budget_s: float = 10.0) -> dict[str, float]:
    """Images/s of each file on batch ``x`` (a path runs on ONNX Runtime CPU, ``(path, Target)`` where it says),
    measured in interleaved rounds (A B C A B C ...) so that all files see the same load from other processes; each
    file's best round counts. On this shared 2-core machine back-to-back medians of the same file varied by 1.5x;
    interleaved best-of ratios were stable to ~10%."""
    feed = np.ascontiguousarray(x)
    runs: dict[str, Callable] = {}
    closers = []
    try:
        for key, value in paths.items():
            path, target = value if isinstance(value, tuple) else (value, ORT_FP32)
            runs[key], close = target.open(path)
            closers.append(close)
        t0 = time.perf_counter()
        for run in runs.values():
            for _ in range(2):
                run(feed)
        per_round = (time.perf_counter() - t0) / 2 * iters
        rounds = max(3, min(rounds, int(budget_s / max(per_round, 1e-6))))  # big models: fewer rounds, bounded time
        best = {k: float("inf") for k in runs}
        for _ in range(rounds):
            for k, run in runs.items():
                time.sleep(SETTLE_S)
                t0 = time.perf_counter()
                for _ in range(iters):
                    run(feed)
                best[k] = min(best[k], (time.perf_counter() - t0) / iters)
    finally:
        for close in closers:
            close()
    return {k: len(x) / v for k, v in best.items()}
