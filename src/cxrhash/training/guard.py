"""The divergence guard: which steps diverge, and the epoch-start snapshots rollbacks restore.

A step diverges when its loss is not finite or exceeds ``explode_factor`` × max(1, median
of the last 50 accepted losses); the engine (:mod:`cxrhash.training.engine`) does not
apply it, restores a :class:`Snapshot` of the model, optimiser, task state and guard
taken at an epoch start, lowers the learning rate and records a :class:`Rollback`
(``docs/design.md``, "Divergence guard").
"""

from __future__ import annotations

import copy
import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cxrhash.training.task import Task

# Losses this many times the recent median (or 1, whichever is larger) count as exploding.
MIN_REFERENCE_LOSS = 1.0
RECENT_LOSSES = 50
MIN_LOSSES_FOR_REFERENCE = 5


@dataclass
class Rollback:
    """One divergence the guard rolled back."""

    epoch: int  # 1-based
    step: int  # 1-based step within the epoch
    loss: float
    reason: str
    lr_factor: float  # the factor in force after the rollback
    to_epoch: int = 0  # 1-based epoch training went back to the start of (0: not recorded)


class DivergenceGuard:
    """Decides whether a step diverged: non-finite, or far above the recent median."""

    def __init__(self, factor: float, recent: Iterable[float] = ()) -> None:
        self.factor = factor
        self.recent: deque[float] = deque(recent, maxlen=RECENT_LOSSES)

    def check(self, loss: float) -> str | None:
        """Why a step with this loss must not be applied, ``None`` when it may."""
        if not math.isfinite(loss):
            return f"loss became {loss}"
        if len(self.recent) >= MIN_LOSSES_FOR_REFERENCE:
            ref = max(abs(statistics.median(self.recent)), MIN_REFERENCE_LOSS)
            if abs(loss) > self.factor * ref:
                return f"loss {loss:.4g} exploded (> {self.factor:g} × recent median {ref:.4g})"
        return None

    def accept(self, loss: float) -> None:
        """Count the loss of an applied step in the recent median."""
        self.recent.append(loss)


@dataclass
class Snapshot:
    """Everything a rollback restores, as it was at an epoch start (what ``last.pt`` holds)."""

    task: dict[str, Any]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    recent: list[float]
    global_step: int
    history_len: int  # epoch records written before this epoch


def take_snapshot(
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    guard: DivergenceGuard,
    global_step: int,
    history_len: int,
) -> Snapshot:
    """Deep copies of the training state at an epoch start."""
    return Snapshot(
        task=copy.deepcopy(task.state_dict()),
        model=copy.deepcopy(model.state_dict()),
        optimizer=copy.deepcopy(optimizer.state_dict()),
        recent=list(guard.recent),
        global_step=global_step,
        history_len=history_len,
    )


def restore_snapshot(
    snapshot: Snapshot,
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    guard: DivergenceGuard,
) -> int:
    """Put the task, model, optimiser and guard back to ``snapshot``; its global step."""
    task.load_state_dict(snapshot.task)
    model.load_state_dict(snapshot.model)
    optimizer.load_state_dict(snapshot.optimizer)
    guard.recent.clear()
    guard.recent.extend(snapshot.recent)
    return int(snapshot.global_step)
