#!/usr/bin/env python3
"""Measure a der-export Triton repository under load, against der-infer on the same engine.

    scripts/triton_load.py REPO --images DIR [-n 400] [-c 1,4,16] [--python STUB_PYTHON]

Starts tritonserver on REPO (127.0.0.1, free ports), sends N single-image requests at each concurrency,
prints img/s and p50/p99 latency per level, then der-infer's end-to-end and engine-only img/s on the
engine inside REPO (REPO/<name>/1/model.onnx), and stops the server. Bounded: per-request timeouts and a
deadline per level. --url HOST:PORT measures an already running local server instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path)
    ap.add_argument("--images", type=Path, required=True, help="folder of images to send")
    ap.add_argument("-n", "--requests", type=int, default=400)
    ap.add_argument("-c", "--concurrency", default="1,4,16")
    ap.add_argument("--url", help="an already running local server (HOST:PORT or grpc://HOST:PORT)")
    ap.add_argument("--python", help="Python for the Python-backend models (see der-serve --python)")
    ap.add_argument("--name", default="der", help="model name given to der-export --triton-name")
    ap.add_argument("--batch-size", type=int, default=8, help="der-infer batch for the engine-only reference")
    ap.add_argument("--deadline", type=float, default=300.0, help="seconds per concurrency level at most")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from der_deploy.errors import DerError
    from der_deploy.images import find_images
    from der_deploy.runtime.triton_load import engine_only, run_load
    from der_deploy.runtime.triton_server import TritonServer, free_ports

    try:
        images = find_images(args.images)
        levels = [int(c) for c in args.concurrency.split(",")]
        server = None
        url = args.url
        if url is None:
            http, grpc, metrics = free_ports(3)
            server = TritonServer(args.repo, http_port=http, grpc_port=grpc, metrics_port=metrics, python=args.python)
            server.start()
            server.wait_ready(180)
            url = f"127.0.0.1:{http}"
        try:
            rows = []
            for c in levels:
                res = run_load(url, images, requests=args.requests, concurrency=c, deadline_s=args.deadline)
                rows.append(res.row())
                print(json.dumps(rows[-1]) + (f"  first error: {res.first_error}" if res.first_error else ""), flush=True)
        finally:
            if server is not None:
                server.stop()
        engine = next(iter(sorted((args.repo / args.name / "1").glob("model.*"))), None)
        ref = engine_only(engine, images, batch_size=args.batch_size, repeat=max(1, args.requests // len(images))) \
            if engine is not None and engine.suffix == ".onnx" else None
        if ref is not None:
            print(json.dumps({"der-infer": ref}))
            for r in rows:
                print(f"{r['clients']:>3} clients: {r['img_s']:8.1f} img/s served = "
                      f"{100 * r['img_s'] / ref['engine_only_img_s']:5.1f} % of der-infer engine-only "
                      f"({ref['engine_only_img_s']:.1f} img/s, batch {ref['batch']}); p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
        if args.json:
            args.json.write_text(json.dumps({"served": rows, "der_infer": ref}, indent=2) + "\n")
    except DerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
