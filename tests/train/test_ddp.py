"""der-train under torchrun: 2 CPU processes (gloo), DDP, sharded validation gathered over ranks."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from der_deploy.datasets import open_dataset
from der_deploy.train.checkpoint import load_checkpoint, read_checkpoint
from der_deploy.train.engine import predict_scores, stream_maps


@pytest.fixture(scope="module")
def ddp_voc(tmp_path_factory):
    from der_deploy.synth import generate

    return generate(tmp_path_factory.mktemp("ddp") / "voc", classes=4, images=44, seed=1, size=48)


def test_two_process_training_matches_single_process_evaluation(ddp_voc, tmp_path):
    val = open_dataset(ddp_voc, "test")
    assert len(val) % 2 == 1  # DistributedSampler pads one shard: the gather must drop the duplicate
    out = tmp_path / "run" / "m.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DER_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "der_deploy.cli.train", str(ddp_voc), "-o", str(out), "--arch", "resnet18", "--input-size", "48",
           "--epochs", "1", "--batch-size", "8", "--workers", "0", "--seed", "5"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    # rank 0 alone logs and writes: one epoch line, one summary, exactly the two checkpoint files
    assert res.stderr.count("epoch 1/1") == 1, res.stderr[-3000:]
    assert res.stdout.count("best: ") == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.last.pt", "m.pt"]
    data = read_checkpoint(out)
    assert data["config"]["batch_size"] == 8 and data["epoch"] == 1
    model, card = load_checkpoint(out)
    logits, targets = predict_scores(model, val, card, batch_size=5)
    maps = stream_maps(logits, targets)
    for stream, value in maps.items():
        assert data["metrics"]["maps"][stream] == pytest.approx(value, abs=1e-9), stream
