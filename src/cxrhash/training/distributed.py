"""Data-parallel training: the process group, which rank does what, and the batch gathers.

``torchrun --nproc-per-node N -m cxrhash train ...`` (or ``cxrhash train --nproc N``) starts N
processes; each reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from its environment and joins one
process group (NCCL on CUDA, gloo on the CPU). ``batch_size`` stays the *global* batch: rank r
trains on the rows r, r + N, … of the single-process batch (:func:`rank_order`), and a task
gathers the outputs of all ranks (:func:`gather_rows`: the other ranks' rows as constants, its
own rows with their gradient) so that its loss is the loss of the whole batch, pairs across
ranks included. Each rank's gradient is then that loss's gradient through its own rows; their
sum (:func:`sum_gradients`, one all-reduce after the backward pass) is the single-process
gradient (``docs/scale.md``). DistributedDataParallel is not used: its gradient hooks
overlap their all-reduces with the backward pass, where global batch norm runs collectives
of its own, and its unused-parameter search fails on outputs a loss leaves out (HashNet's
logits).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from cxrhash.training.settings import epoch_generator

# Rank 0 validates and writes checkpoints while the others wait at the next collective.
TIMEOUT = timedelta(hours=2)
_RANK_SEED_STRIDE = 1_000_000_007


def requested() -> bool:
    """Whether this process was started by a launcher for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Processes in the group (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes the run folder, logs and shows progress (rank 0)."""
    return rank() == 0


def local_rank() -> int:
    """The process's index on its machine (selects its GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device_type: str) -> bool:
    """Join the process group the launcher described (``WORLD_SIZE`` > 1); True if joined now.

    NCCL for CUDA, gloo otherwise; nothing happens for a single process or when a group
    already exists (e.g. a test that set one up itself).
    """
    if not requested() or (dist.is_available() and dist.is_initialized()):
        return False
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return True


def shutdown() -> None:
    """Leave the process group (if any) before the process exits."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch_command(nproc: int, argv: list[str], max_restarts: int = 0) -> list[str]:
    """The ``torchrun`` command (``torch.distributed.run``, this Python) that runs
    ``python -m cxrhash ARGV`` in ``nproc`` processes on this machine, restarting them all
    up to ``max_restarts`` times after one fails."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        "-m",
        "cxrhash",
        *argv,
    ]


def rank_seed(seed: int) -> int:
    """A seed of this rank's own random streams (augmentation), ``seed`` itself on rank 0."""
    return seed + rank() * _RANK_SEED_STRIDE


def rank_order(n: int, seed: int) -> list[int]:
    """This rank's share of the epoch's order: items r, r + N, … of the single-process order.

    The order is the one the single process's shuffled ``DataLoader`` draws from
    ``epoch_generator(seed)`` (drawn through a loader, so the two cannot drift apart), cut to a
    multiple of N so every rank runs the same number of steps. Batch t of rank r then holds
    rows r, r + N, … of the single process's batch t of N × the per-rank size.
    """
    gen = epoch_generator(seed)
    items: list[int] = list(range(n))
    loader: DataLoader[int] = DataLoader(
        items,  # type: ignore[arg-type]
        batch_size=max(n, 1),
        shuffle=True,
        generator=gen,
    )
    order = next(iter(loader)).tolist() if n else []
    world = world_size()
    return order[: (n // world) * world][rank() :: world]


def all_counts(n: int, device: torch.device) -> list[int]:
    """Every rank's ``n`` (e.g. the readable images of its batch), in rank order."""
    if not active():
        return [n]
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size())]
    dist.all_gather(counts, torch.tensor([n], dtype=torch.int64, device=device))
    return [int(c.item()) for c in counts]


def gather_rows(x: Tensor, counts: list[int]) -> Tensor:
    """The rows of every rank, this rank's keeping their gradient, the others' constants.

    ``counts`` are the ranks' row counts (:func:`all_counts`). With equal counts the rows
    are interleaved (row i of rank r at i·N + r), which is the single-process batch's order
    (:func:`rank_order`); otherwise rank after rank.
    """
    if len(counts) == 1:
        return x
    most = max(counts)
    padded = x.detach().new_zeros((most, *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    rows = [part[:c] for part, c in zip(parts, counts, strict=True)]
    rows[rank()] = x
    if len(set(counts)) == 1:
        return torch.stack(rows, dim=1).reshape(most * len(counts), *x.shape[1:])
    return torch.cat(rows)


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any rank (every rank must then take the same branch)."""
    if not active():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (plain Python values: scores, an error message)."""
    if not active():
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_gradients(model: nn.Module) -> None:
    """Replace every parameter's gradient by its sum over the ranks (one all-reduce of one
    flat buffer). A parameter without a gradient has none on every rank (same code, same
    graph), so it is left out alike."""
    if not active():
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_state(model: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (they start equal by seeding; this
    makes it so whatever the initialisation did)."""
    if not active():
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if active():
        dist.barrier()
