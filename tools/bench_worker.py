"""One benchmark measurement in its own process, so peak memory belongs to one backend only.

``python -m der_deploy.tools.bench_worker '{"kind": "ort", "path": "der.onnx", ...}'`` prints one JSON line.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any, Callable

import numpy as np


def _torch_fn(path: str, threads: int | None) -> Callable[[np.ndarray], Any]:
    import torch

    from der_deploy.train.checkpoint import load_checkpoint

    if threads:
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(path)

    def run(x: np.ndarray):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).logits.numpy()

    return run


def _runner_fn(kind: str, path: str, threads: int | None, precision: str | None = None):
    """(infer function, close function, what ran) for one engine on one backend."""
    from der_deploy.backends import open_runner

    if kind == "openvino":
        runner = open_runner(path, backend="openvino", precision=precision, intra_op_threads=threads)
    else:
        runner = open_runner(path, backend="ort" if kind == "ort" else "trt")
        if threads and hasattr(runner, "intra_op_threads"):
            runner.intra_op_threads = threads
    runner.activate()
    name = runner.get_input_metadata()[0].name
    return (lambda x: runner.infer({name: x})), runner.deactivate, runner.summary()


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the exec'd image; ru_maxrss would carry the parent's peak
    across fork + exec on Linux and report der-bench's own (torch-sized) footprint for every row."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    """der-infer's path: pooled decode + preprocess overlapped with batched inference, on real image files."""
    from der_deploy.runtime.predictor import measure

    options = {"precision": spec["precision"]} if spec.get("precision") else {}
    if spec.get("backend") == "openvino":
        options["ov_mode"] = "throughput"  # what der-infer uses over a folder
    row = measure(spec["path"], spec["images"], batch_size=spec["batch"], backend=spec.get("backend", "ort"), **options)
    return {"kind": "pipeline", **row, "peak_rss_mb": _peak_rss_mb()}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    kind, path = spec["kind"], spec["path"]
    if kind == "pipeline":
        return pipeline(spec)
    h, w = spec["input_size"]
    close = lambda: None  # noqa: E731
    fn = _torch_fn(path, spec.get("threads")) if kind == "torch" else None
    runtime = "PyTorch eager" if kind == "torch" else ""
    if fn is None:
        fn, close, runtime = _runner_fn(kind, path, spec.get("threads"), spec.get("precision"))
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {"kind": kind, "batches": {}, "runtime": runtime}
    try:
        for b in spec["batches"]:
            x = rng.standard_normal((b, 3, h, w), dtype=np.float32)
            for _ in range(spec["warmup"]):
                fn(x)
            times = []
            deadline = time.perf_counter() + spec.get("max_seconds", 30.0)
            for _ in range(spec["iters"]):
                t0 = time.perf_counter()
                fn(x)
                times.append(time.perf_counter() - t0)
                if time.perf_counter() > deadline and len(times) >= 3:
                    break
            t = np.asarray(times)
            result["batches"][str(b)] = {
                "img_s": float(b / t.mean()), "p50_ms": float(np.percentile(t, 50) * 1e3),
                "p99_ms": float(np.percentile(t, 99) * 1e3), "iters": int(t.size),
            }
    finally:
        close()
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    try:
        print(json.dumps(measure(spec)))
    except Exception as err:  # reported as a row note by the parent, never a crash of der-bench
        print(json.dumps({"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
