"""A bounded load generator for a local Triton server (`der-serve load` is its command line).

N requests, one encoded image each, spread over C client threads (each with its own connection), every
request with a network timeout; it stops by itself after N requests or at the deadline, whichever comes
first. Only loopback addresses are accepted: this measures a server on this machine, never someone else's.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from der_deploy.errors import DerError

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


@dataclass
class LoadResult:
    concurrency: int
    requests: int  # answered without error
    errors: int
    wall_s: float
    latencies_s: list[float] = field(repr=False, default_factory=list)
    first_error: str | None = None

    @property
    def img_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else float("nan")

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3) if self.latencies_s else float("nan")

    def row(self) -> dict:
        return {"clients": self.concurrency, "requests": self.requests, "errors": self.errors,
                "img_s": round(self.img_s, 2), "p50_ms": round(self.percentile_ms(50), 2),
                "p99_ms": round(self.percentile_ms(99), 2), "wall_s": round(self.wall_s, 2)}


def run_load(url: str, images: list[Path], *, requests: int, concurrency: int, timeout: float = 30.0,
             deadline_s: float = 300.0, warmup: int = 4) -> LoadResult:
    """Send ``requests`` single-image requests from ``concurrency`` threads to the der entry at ``url``."""
    from .client import TritonPredictor, parse_url

    _, host, _ = parse_url(url)
    if host.rsplit(":", 1)[0] not in LOOPBACK:
        raise DerError(f"{url}: the load generator only targets a server on this machine (127.0.0.1)")
    if requests < 1 or concurrency < 1 or not images:
        raise DerError("need at least one request, one client and one image")
    blobs = [Path(p).read_bytes() for p in images]
    with TritonPredictor(url, concurrency=concurrency, timeout=timeout) as client:
        for i in range(warmup):  # model instances and connections warm, not counted
            client.infer_bytes(blobs[i % len(blobs)])
        counter = iter(range(requests))
        lock = threading.Lock()
        latencies: list[float] = []
        errors: list[str] = []
        stop_at = time.monotonic() + deadline_s

        def worker() -> None:
            while time.monotonic() < stop_at:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    client.infer_bytes(blobs[i % len(blobs)])  # one connection per thread (thread-local client)
                except Exception as err:  # counted, not raised: a load test reports failures
                    with lock:
                        errors.append(str(err).splitlines()[0] if str(err) else type(err).__name__)
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, stop_at - time.monotonic()) + timeout + 5)
        wall = time.perf_counter() - t0
    return LoadResult(concurrency, len(latencies), len(errors), wall, latencies, errors[0] if errors else None)


def engine_only(engine: str | Path, images: list[Path], *, batch_size: int = 8, repeat: int = 1) -> dict:
    """der-infer's own numbers on the same engine and images: end-to-end and engine-only img/s (der-bench's
    pipeline measurement, run in this process)."""
    from der_deploy.runtime.predictor import measure

    r = measure(engine, list(images) * repeat, batch_size=batch_size)
    return {"batch": batch_size, "images": r["images"], "end_to_end_img_s": round(r["end_to_end_img_s"], 2),
            "engine_only_img_s": round(r["engine_only_img_s"], 2)}


def run_session(repo: str | Path, images: str | Path, *, levels: list[int], requests: int = 400, url: str | None = None,
                python: str | Path | None = None, name: str = "der", batch_size: int = 8, deadline: float = 300.0,
                json_out: str | Path | None = None, echo=print) -> dict:
    """`der-serve load`: start tritonserver on REPO (127.0.0.1, free ports) unless ``url`` names a running one,
    measure each concurrency level, stop it, then der-infer's end-to-end and engine-only img/s on the engine
    inside REPO for reference. Returns {"served": rows, "der_infer": ref} and writes it to ``json_out``."""
    import json

    from der_deploy.fileio import write_text
    from der_deploy.images import find_images

    from .server import TritonServer, free_ports

    repo = Path(repo)
    files = find_images([Path(images)])
    if not files:
        raise DerError(f"{images}: no images found; give a folder of JPEG/PNG files with --images")
    server = None
    if url is None:
        http, grpc, metrics = free_ports(3)
        server = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, python=python)
        server.start()
        server.wait_ready(180)
        url = f"127.0.0.1:{http}"
    rows = []
    try:
        for c in levels:
            res = run_load(url, files, requests=requests, concurrency=c, deadline_s=deadline)
            rows.append(res.row())
            echo(json.dumps(rows[-1]) + (f"  first error: {res.first_error}" if res.first_error else ""))
    finally:
        if server is not None:
            server.stop()
    engine = next(iter(sorted((repo / name / "1").glob("model.*"))), None)
    ref = None
    if engine is not None and engine.suffix == ".onnx":
        ref = engine_only(engine, files, batch_size=batch_size, repeat=max(1, requests // len(files)))
        echo(json.dumps({"der-infer": ref}))
        for r in rows:
            echo(f"{r['clients']:>3} clients: {r['img_s']:8.1f} img/s served = "
                 f"{100 * r['img_s'] / ref['engine_only_img_s']:5.1f} % of der-infer engine-only "
                 f"({ref['engine_only_img_s']:.1f} img/s, batch {ref['batch']}); p50 {r['p50_ms']} ms, "
                 f"p99 {r['p99_ms']} ms")
    result = {"served": rows, "der_infer": ref}
    if json_out is not None:
        write_text(json_out, json.dumps(result, indent=2) + "\n")  # atomic: no half-written results file
    return result
