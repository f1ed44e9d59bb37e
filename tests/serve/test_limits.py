"""Bounded memory per image on the served and local paths (issue 19): the Triton preprocessing model's pixel
limit (its ``der_max_pixels`` parameter, else der_deploy.images.DEFAULT_MAX_PIXELS), a 400 with the reason for
an oversized or hostile upload, the server's memory bounded under 16 such requests at once, and der-infer's
--max-pixels. The server is a REAL tritonserver on loopback (tests/serve/conftest.py)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from der_deploy.images import DEFAULT_MAX_PIXELS

BIN = Path(sys.executable).parent
SIDE = 9000  # 81 MP: twice the default limit, under Pillow's bomb limit; Pillow would need ~330 MB to decode it


def _png_header_heavy(w: int, h: int) -> bytes:
    """A black w x h RGB PNG: a few hundred KB on the wire, 3 * w * h bytes once decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    comp, row = zlib.compressobj(9), b"\0" * (3 * w + 1)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def big_png() -> bytes:
    return _png_header_heavy(SIDE, SIDE)


# --- the preprocessing model's parameter (no server needed) ------------------------------------------------------

def _preprocess(params: dict):
    from der_deploy.artifact.card import ModelCard
    from der_deploy.artifact.keys import TRITON_CARD_PARAM
    from der_deploy.serve.models import Preprocess

    cfg = {"name": "der_preprocess", "parameters": {
        TRITON_CARD_PARAM: {"string_value": ModelCard(classes=["a"], input_size=(8, 8)).to_json()},
        **{k: {"string_value": v} for k, v in params.items()}}}
    model = Preprocess()
    model.initialize({"model_config": json.dumps(cfg)})
    return model


def test_preprocess_limit_parameter():
    from der_deploy.artifact.keys import TRITON_MAX_PIXELS_PARAM as MAX_PIXELS_PARAM

    assert _preprocess({}).max_pixels == DEFAULT_MAX_PIXELS == 40_000_000
    assert _preprocess({MAX_PIXELS_PARAM: "1000"}).max_pixels == 1000
    assert _preprocess({MAX_PIXELS_PARAM: "0"}).max_pixels == 0  # only the decompression-bomb limit
    for bad in ("-1", "lots"):
        with pytest.raises(RuntimeError, match=f"must be a whole number >= 0 .0: no limit., got '{bad}'"):
            _preprocess({MAX_PIXELS_PARAM: bad})


def _written_limit(repo: Path) -> tuple[str, int]:
    """The parameter as der-export wrote it into config.pbtxt, and what the preprocessing model makes of it."""
    from der_deploy.artifact.keys import TRITON_MAX_PIXELS_PARAM
    from der_deploy.serve.models import Preprocess
    from der_deploy.serve.repository import parse_pbtxt
    from google.protobuf.json_format import MessageToJson

    cfg = parse_pbtxt((repo / "der_preprocess" / "config.pbtxt").read_text())
    model = Preprocess()
    model.initialize({"model_config": MessageToJson(cfg, preserving_proto_field_name=True)})
    return cfg.parameters[TRITON_MAX_PIXELS_PARAM].string_value, model.max_pixels


def test_der_export_writes_the_limit(tiny_onnx, tmp_path):
    """der-export --triton-max-pixels lands in config.pbtxt (the default written out too) and the preprocessing
    model, initialised from that config as Triton would, enforces it."""
    from click.testing import CliRunner

    from der_deploy.cli.export import main

    runner = CliRunner()
    for flag, want in [([], 40_000_000), (["--triton-max-pixels", "5000"], 5000), (["--triton-max-pixels", "0"], 0)]:
        repo = tmp_path / f"repo{len(flag)}{want}"
        res = runner.invoke(main, [str(tiny_onnx), "--triton", str(repo), *flag])
        assert res.exit_code == 0, res.output
        assert _written_limit(repo) == (str(want), want)
    res = runner.invoke(main, [str(tiny_onnx), "--triton-max-pixels", "5000"])
    assert res.exit_code == 2 and "--triton-max-pixels need --triton REPO" in res.output
    res = runner.invoke(main, [str(tiny_onnx), "--triton", str(tmp_path / "r"), "--triton-max-pixels", "-1"])
    assert res.exit_code == 2 and "--triton-max-pixels" in res.output



def test_write_repository_refuses_a_negative_limit(tiny_onnx, tmp_path):
    """The library call refuses what the CLI's IntRange refuses, before anything is written."""
    from der_deploy.errors import ExportError
    from der_deploy.serve.repository import write_repository

    with pytest.raises(ExportError, match=r"--triton-max-pixels must be >= 0 \(0: no limit\), got -1"):
        write_repository(tiny_onnx, tmp_path / "repo", max_pixels=-1)
    assert not (tmp_path / "repo").exists()
    assert _written_limit(write_repository(tiny_onnx, tmp_path / "ok", max_pixels=7).root) == ("7", 7)

# --- der-infer (local): --max-pixels ---------------------------------------------------------------------------

def _records(args) -> tuple[subprocess.CompletedProcess, list[dict]]:
    proc = subprocess.run([str(BIN / "der-infer"), *map(str, args), "--format", "jsonl"], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, DER_NO_PROGRESS="1"))
    return proc, [json.loads(line) for line in proc.stdout.splitlines()]


def test_der_infer_max_pixels(tiny_onnx, serve_images, tmp_path, big_png):
    big = tmp_path / "big.png"
    big.write_bytes(big_png)
    proc, recs = _records(["--engine", tiny_onnx, serve_images[0], big])
    assert proc.returncode == 0, proc.stderr
    assert recs[1] == {"path": str(big), "error": f"{big}: too large: 9000×9000 > 40000000 pixels; raise --max-pixels"}
    assert "labels" in recs[0]
    proc, recs = _records(["--engine", tiny_onnx, serve_images[0], "--max-pixels", 5000])  # 96x96 = 9216 pixels
    assert recs[0]["error"].endswith("too large: 96×96 > 5000 pixels; raise --max-pixels"), recs
    proc, _ = _records(["--triton", "127.0.0.1:1", serve_images[0], "--max-pixels", 5000])
    assert proc.returncode == 2 and "--max-pixels apply to a local --engine, not to --triton" in proc.stderr


# --- the served path: a real tritonserver ----------------------------------------------------------------------

def _group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in the server's process group (tritonserver + Python-backend stubs)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):  # exited meanwhile
            continue
    return total / 1024


def _infer(server, data: bytes):
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['--http-port']}", network_timeout=120)
    inp = httpclient.InferInput("image", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[data]], dtype=object))
    return c.infer("der_e2e", [inp])


def test_sixteen_oversized_uploads_get_400_and_memory_stays_bounded(server, serve_images, big_png):
    """16 concurrent requests: 81-MP PNGs, a JPEG header claiming 60000x60000 and a truncated JPEG. Each gets a
    400 naming its reason; the server's resident memory (all its processes) grows by far less than one such decode would
    need, and it answers a normal request afterwards."""
    from tritonclient.utils import InferenceServerException

    good = serve_images[0].read_bytes()
    _infer(server, good)  # warm: the models' first request allocates their buffers
    jpeg = good[:good.find(b"\xff\xc0") + 5] + struct.pack(">HH", 60000, 60000) + good[good.find(b"\xff\xc0") + 9:]
    uploads = [big_png] * 14 + [jpeg, good[: len(good) // 2]]
    expect = ["too large: 9000×9000 > 40000000 pixels; raise --max-pixels"] * 14 + [
        "refused as a decompression bomb", "truncated or corrupt"]
    pgid = server.proc.pid
    before = _group_rss_mb(pgid)
    peak, stop = [before], threading.Event()

    def sample():
        while not stop.is_set():
            peak.append(_group_rss_mb(pgid))
            time.sleep(0.05)

    results: list = [None] * len(uploads)
    barrier = threading.Barrier(len(uploads))

    def send(i):
        barrier.wait(30)
        try:
            results[i] = _infer(server, uploads[i])
        except InferenceServerException as err:
            results[i] = err

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(uploads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    stop.set()
    sampler.join(5)
    assert not any(t.is_alive() for t in threads)
    for i, (res, want) in enumerate(zip(results, expect)):
        assert isinstance(res, InferenceServerException), f"upload {i} was accepted"
        assert res.status() == "400" and f"request item 0: {want}" in str(res), (i, res.status(), str(res))
    grown = max(peak) - before
    print(f"server RSS {before:.0f} MB before, peak {max(peak):.0f} MB under 16 oversized uploads (+{grown:.0f} MB)")
    assert grown < 150, f"server memory grew by {grown:.0f} MB under oversized uploads (one decode: ~330 MB)"
    assert _infer(server, good).as_numpy("scores").shape == (1, 5)
