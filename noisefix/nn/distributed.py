"""Data-parallel runs under torchrun: process group, ranks, shards of the data, gathers back to global order.

`torchrun --nproc-per-node W -m noisefix probe|train ...` starts W processes ("ranks") with WORLD_SIZE, RANK and
LOCAL_RANK in their environment. `setup(device)` then joins the process group once (backend "cpu:gloo,cuda:nccl"
for a CUDA device: NCCL for the GPU tensors, gloo for the CPU-side gathers and objects; plain gloo on CPU) and
pins each rank to cuda:LOCAL_RANK. Without torchrun (or with WORLD_SIZE=1) every helper is a no-op: rank 0 of 1,
shard = everything, gather = identity, so the single-process path runs the same code.

N rows split over W ranks: `shard(n)` gives a rank its indices (strided or contiguous, deterministic), rank r
computes rows for `shards[r]`, `gather_rows` puts them back in global order on rank 0.
"""

from __future__ import annotations

import atexit
import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from noisefix.errors import ConfigError


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer; launch with torchrun") from None


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks: the process group's, else $WORLD_SIZE (torchrun), else 1."""
    return dist.get_world_size() if initialized() else _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's rank in [0, world_size()): the process group's, else $RANK, else 0."""
    return dist.get_rank() if initialized() else _env_int("RANK", 0)


def local_rank() -> int:
    """Rank on this machine ($LOCAL_RANK, set by torchrun): picks the GPU."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on rank 0, the only rank that reports and writes files (and always without torchrun)."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group once when launched with WORLD_SIZE > 1; return the device this rank computes on.

    CUDA: cuda:LOCAL_RANK (set as the current device), backend "cpu:gloo,cuda:nccl". CPU: backend gloo.
    Single process: `device` unchanged, no process group.
    """
    if world_size() == 1:
        return device
    if not dist.is_available():
        raise ConfigError("launched with WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if device.type == "cuda":
        if local_rank() >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local_rank()} but this machine has {torch.cuda.device_count()} CUDA "
                              "device(s); start at most that many processes per node (--nproc-per-node)")
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
        atexit.register(destroy)
    elif device.type == "cuda" and "nccl" not in str(dist.get_backend()):
        raise ConfigError(f"this process joined the group for CPU (backend {dist.get_backend()}); a later stage "
                          "cannot switch to CUDA: use the same --device for every stage of one torchrun")
    return device


def destroy() -> None:
    """Leave the process group (registered at exit by `setup`)."""
    if initialized():
        dist.destroy_process_group()


def shard(n: int, *, of_rank: int | None = None, world: int | None = None, strided: bool = True) -> np.ndarray:
    """int64 indices of the `n` rows that rank `of_rank` (default: this one) handles, ascending.

    strided: r, r + W, r + 2W, ...; contiguous: one block of n // W or n // W + 1 rows. Either way the W shards
    partition range(n), differ in size by at most one, and depend only on (n, rank, W).
    """
    r = rank() if of_rank is None else of_rank
    w = world_size() if world is None else world
    if not 0 <= r < w:
        raise ConfigError(f"rank {r} outside [0, {w})")
    if strided:
        return np.arange(r, n, w, dtype=np.int64)
    bounds = np.linspace(0, n, w + 1).round().astype(np.int64)
    return np.arange(bounds[r], bounds[r + 1], dtype=np.int64)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks in place (no-op single-process); returns `t`."""
    if initialized():
        dist.all_reduce(t)
    return t


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` wrapped in DistributedDataParallel when a process group is up (gradients averaged over ranks,
    rank 0's initial weights broadcast); `model` itself otherwise. Save `model`, not the wrapper."""
    if not initialized():
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` (picklable, small) on every rank; the identity single-process."""
    if not initialized():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rows(local, shards: Sequence[np.ndarray]):
    """Rows computed by every rank, back in global order on rank 0; None on the other ranks.

    `shards[r]` lists the global indices of rank r's rows (a partition of range(N)); `local` holds this rank's
    rows in that order: (len(shards[rank]), ...) numpy or torch. Returns (N, ...) of the same kind and dtype,
    out[shards[r]] = rank r's rows. Every rank must call it (a collective). Costs N rows of memory on rank 0
    (plus W padded copies of the largest shard while receiving); gloo carries the data on CPU.
    """
    as_numpy = isinstance(local, np.ndarray)
    t = (torch.from_numpy(np.ascontiguousarray(local)) if as_numpy else local.detach()).cpu().contiguous()
    me = rank()
    if len(t) != len(shards[me]):
        raise ConfigError(f"rank {me} holds {len(t)} rows but its shard has {len(shards[me])}")
    n = sum(len(s) for s in shards)
    if initialized():
        most = max(len(s) for s in shards)
        padded = t.new_zeros((most, *t.shape[1:]))
        padded[:len(t)] = t
        parts = [torch.empty_like(padded) for _ in shards] if me == 0 else None
        dist.gather(padded, parts, dst=0)
        if me != 0:
            return None
    else:
        parts = [t]
    out = t.new_empty((n, *t.shape[1:]))
    for s, part in zip(shards, parts):
        out[torch.from_numpy(np.asarray(s, dtype=np.int64))] = part[:len(s)]
    return out.numpy() if as_numpy else out
