"""What a training job supplies to the engine: a :class:`Task`, and its step's output."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset


@dataclass
class StepOutput:
    """What a task's training step returns: the loss to minimise and its parts as floats."""

    loss: torch.Tensor
    parts: dict[str, float]
    n_images: int


class Task(Protocol):
    """What a training job supplies to :func:`cxrhash.training.engine.fit`.

    ``kind`` names the checkpoint kind (``hashing``, ``c2l``); ``curves_name`` the
    PNG of the curves; ``score_key`` the validation entry that selects ``best.pt``
    (``None``: no validation, no ``best.pt``); ``resumable`` the config keys that
    may change on resume.
    """

    kind: str
    curves_name: str
    score_key: str | None
    resumable: tuple[str, ...]

    def prepare(self, run_dir: Path, saved: Mapping[str, Any] | None) -> None:
        """Open the data (and e.g. make the split) once the run folder is settled."""

    def build_model(self) -> nn.Module:
        """The model, built right after the engine seeds the RNGs."""

    def train_set(self) -> Dataset:
        """The training set; its items are collated by :meth:`collate`."""

    def collate(self, items: list[Any]) -> dict[str, Any]:
        """Batch of items; unreadable items go to ``batch['skipped']``."""

    def on_epoch_start(self, model: nn.Module, epoch: int, steps_per_epoch: int) -> None:
        """Per-epoch hook (continuation schedules)."""

    def training_step(
        self, model: nn.Module, batch: dict[str, Any], device: torch.device
    ) -> StepOutput | None:
        """Loss of one batch (``None`` skips the batch, e.g. fewer than two images)."""

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimiser step (e.g. a momentum encoder's update)."""

    def validate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Validation scores after ``epoch``; empty when the task has none."""

    def checkpoint_extra(self, model: nn.Module) -> dict[str, Any]:
        """Task-specific checkpoint entries (label names, data fingerprint, …)."""

    def check_resume(self, saved: Mapping[str, Any]) -> None:
        """Task-specific resume checks beyond the config (raise TrainingError)."""

    def state_dict(self) -> dict[str, Any]:
        """Training state the task keeps outside the model (checkpointed, rolled back)."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def finish(self, model: nn.Module, run_dir: Path) -> None:
        """Write the task's final outputs (e.g. ``backbone.pt``)."""
