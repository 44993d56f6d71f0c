"""Data-parallel training (issue #15): 2 gloo processes on the CPU train what 1 process does.

Each rank runs batch 4 of the global batch 8; the losses gather every rank's outputs, batch
norm normalises over both ranks, and rank r gets rows r, r + 2, … of the single process's
batches, so the per-step losses and the weights after the steps must equal those of one
process with batch 8 up to float rounding — for attention-fusion (contrastive pairs, BCE,
bit balance, global batch norm in its refinement branch) and HashNet (balanced pairwise
likelihood, an unused classifier), the HashNet run interrupted and resumed.

Float rounding differs between the runs (a sum over 2 ranks is not a sum over 1), and
attention-fusion's max-pools route a gradient to one of two near-equal cells, so after a
few steps a rounding difference can send one step's gradient elsewhere (seen at the 4th
step: 5 % on one layer, the loss still equal to 6 digits). Its comparison covers 3 steps;
HashNet's, with no max-pool, 2 epochs. Augmentation is off: it draws different random
numbers per rank by design.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cxrhash.config import make_config
from cxrhash.training import distributed
from cxrhash.training.checkpoint import load_checkpoint
from cxrhash.training.trainer import train

CASES: dict[str, dict[str, Any]] = {
    # the code terms from the first step on (no delay or ramp), no ITQ after training;
    # 3 steps (a fifth of the 120 films trains)
    "attention-fusion": {
        "method_params": {"delay_epochs": 0.0, "ramp_epochs": 0.0, "itq": 0.0},
        "split_fractions": {"train": 0.2, "val": 0.25, "query": 0.2, "database": 0.35},
    },
    "hashnet": {"split_fractions": {"train": 0.25, "val": 0.25, "query": 0.2, "database": 0.3}},
}
EPOCHS = {"attention-fusion": 1, "hashnet": 2}


def _config(phantom_dir: Path, method: str, epochs: int) -> Any:
    return make_config(
        "test",
        data=f"phantom:{phantom_dir}",
        method=method,
        **CASES[method],
        epochs=epochs,
        batch_size=8,
        augment=False,
        device="cpu",
        val_database_max=40,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, port: int, phantom_dir: Path, out: Path, method: str) -> None:
    """One process: 1 epoch, then (HashNet) resume to 2 (a resumed data-parallel run)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2"
    )
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        assert distributed.world_size() == 2 and distributed.is_main() == (rank == 0)
        train(_config(phantom_dir, method, 1), out, progress=False)
        if EPOCHS[method] == 2:
            train(_config(phantom_dir, method, 2), out, resume=True, progress=False)
    finally:
        dist.destroy_process_group()


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # ~35 s each on 2 shared cores (2 trainings, 3 processes)
@pytest.mark.parametrize("method", sorted(CASES))
def test_two_processes_train_what_one_process_trains_with_the_doubled_batch(
    phantom_dir: Path, tmp_path: Path, method: str
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(_config(phantom_dir, method, EPOCHS[method]), tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(threads)
    mp.spawn(
        _rank_main,
        args=(_free_port(), phantom_dir, tmp_path / "two", method),
        nprocs=2,
        join=True,
    )
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    # per-step losses (the guard's record), HashNet's second epoch after a resume
    steps_one = torch.tensor(one["engine"]["recent_losses"])
    steps_two = torch.tensor(two["engine"]["recent_losses"])
    assert len(steps_one) == len(steps_two) == EPOCHS[method] * one["history"][0]["steps"] >= 3
    assert _close(steps_one, steps_two), (steps_one, steps_two)
    assert [h["steps"] for h in one["history"]] == [h["steps"] for h in two["history"]]
    # the gradients matched at every step: the weights and batch-norm statistics agree
    assert one["model"].keys() == two["model"].keys()
    differ = [k for k in one["model"] if not _close(one["model"][k], two["model"][k])]
    assert not differ, differ
    assert len(two["history"]) == EPOCHS[method]
    assert (tmp_path / "two" / "train_summary.json").exists()


def test_nproc_runs_the_same_command_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from typer.testing import CliRunner

    from cxrhash.cli import app

    calls: list[list[str]] = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 3)
    argv = ["train", "--data", "phantom:x", "--nproc", "2", "--out", str(tmp_path), "--bits", "8"]
    monkeypatch.setattr(sys, "argv", ["cxrhash", *argv])
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 3  # the launcher's exit code, nothing trained here
    assert calls == [
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        + ["--max-restarts=0", "-m", "cxrhash", "train", "--data", "phantom:x"]
        + ["--out", str(tmp_path), "--bits", "8"]
    ]
    assert not (tmp_path / "config.json").exists()
