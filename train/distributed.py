"""Scale-out under ``torchrun``: process group, DDP wrapping, sharded sampling, gathering validation scores.

Without torchrun's environment (WORLD_SIZE unset or 1) everything degrades to a single process, so the
engine has one code path. Batch size is per process (the global batch is N × --batch-size).
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from der_deploy.errors import DerError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> DistEnv:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return DistEnv(device=torch.device("cuda", 0) if cuda else torch.device("cpu"))
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    except (KeyError, ValueError) as err:
        raise DerError(f"WORLD_SIZE={world} but RANK/LOCAL_RANK are missing or bad ({err}); launch with torchrun") from None
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise DerError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                           "use --nproc-per-node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if cuda else "gloo", timeout=_dt.timedelta(minutes=30),
                                    **({"device_id": device} if cuda else {}))
        except Exception as err:  # rendezvous problems arrive as many types
            raise DerError(f"cannot join the torchrun process group ({str(err).splitlines()[0][:200]})") from None
    return DistEnv(rank, world, local_rank, local_world, device)


def cleanup(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def wrap(model: torch.nn.Module, env: DistEnv) -> torch.nn.Module:
    if not env.enabled:
        return model
    ids = [env.local_rank] if env.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_buffers(model: torch.nn.Module, env: DistEnv) -> None:
    """Give every rank rank 0's BatchNorm statistics: each rank's last training forward updated its own
    copy, and evaluation and the saved checkpoint must use the same ones."""
    if env.enabled:
        for buf in getattr(model, "module", model).buffers():
            dist.broadcast(buf, src=0)


def sampler(dataset, env: DistEnv, *, shuffle: bool, seed: int):
    """One sampler for every case; with world_size 1 it is a seeded per-epoch shuffle (or the identity)."""
    return torch.utils.data.distributed.DistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed, drop_last=False)


def all_agree(env: DistEnv, ok: bool) -> bool:
    """True only where ``ok`` holds on every rank, so that all ranks take or skip a step together."""
    if not env.enabled:
        return ok
    flag = torch.tensor([0.0 if ok else 1.0], device=env.device)
    dist.all_reduce(flag)
    return float(flag.item()) == 0.0


def all_sum(env: DistEnv, values: list[float]) -> list[float]:
    """Sum numbers over ranks (epoch loss sums and counts)."""
    if not env.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return t.cpu().tolist()


def gather_rows(env: DistEnv, indices: np.ndarray, rows: dict[str, np.ndarray], total: int) -> dict[str, np.ndarray]:
    """Reassemble per-rank rows (``indices`` into the dataset) into full (total, C) arrays on every rank.

    DistributedSampler pads the last shard by repeating items; placing rows by index drops those
    duplicates, so metrics are over the exact dataset.
    """
    if not env.enabled:
        out = {k: np.empty((total,) + v.shape[1:], dtype=v.dtype) for k, v in rows.items()}
        for k, v in rows.items():
            out[k][indices] = v
        return out
    counts = [torch.zeros(1, dtype=torch.int64, device=env.device) for _ in range(env.world_size)]
    dist.all_gather(counts, torch.tensor([len(indices)], dtype=torch.int64, device=env.device))
    width = int(max(int(c) for c in counts))

    def gather(array: np.ndarray) -> list[np.ndarray]:
        padded = np.zeros((width,) + array.shape[1:], dtype=array.dtype)
        padded[: len(array)] = array
        local = torch.from_numpy(padded).to(env.device)
        parts = [torch.empty_like(local) for _ in range(env.world_size)]
        dist.all_gather(parts, local)
        return [p.cpu().numpy()[: int(n)] for p, n in zip(parts, counts)]

    all_idx = np.concatenate(gather(indices.astype(np.int64)))
    seen = np.zeros(total, dtype=bool)
    seen[all_idx] = True
    if not seen.all():
        raise RuntimeError(f"gathered validation covers {int(seen.sum())} of {total} images")
    out = {}
    for k, v in rows.items():
        full = np.empty((total,) + v.shape[1:], dtype=v.dtype)
        full[all_idx] = np.concatenate(gather(v))
        out[k] = full
    return out
