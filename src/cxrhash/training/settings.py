"""How the engine optimises and where it runs: validated settings, the learning-rate
schedule, the optimiser, the device and its speed-ups, and seeding."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cxrhash.training.errors import TrainingError, refuse_invalid

SCHEDULES = ("step", "cosine", "constant")


@dataclass
class EngineSettings:
    """How the engine optimises; hashing and pretraining configs map onto it.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: base learning rate.
        optimizer: ``sgd`` (momentum, weight decay) or ``adam``.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        schedule: ``step`` (×``lr_gamma`` once, from epoch ``lr_step_epoch`` on: the
            paper's 0.01 → 0.001 after epoch 20), ``cosine`` (per epoch, towards 0)
            or ``constant``.
        lr_step_epoch: epochs run at the base rate before the one drop.
        lr_gamma: the drop factor.
        warmup_epochs: linear warm-up of the learning rate over this many epochs' steps
            (from lr/n to lr over n steps), then the schedule.
        grad_clip: clip the global gradient L2 norm to this (``None``: no clipping).
        amp: ``auto`` (on for CUDA), ``on`` or ``off``: float16 autocast + loss scaling;
            ``fp16`` (= ``on``) or ``bf16`` (bfloat16 autocast, no loss scaling: its
            exponent range is float32's) on any device.
        channels_last: ``auto`` (on for CUDA), ``on`` or ``off``.
        max_rollbacks: divergence rollbacks allowed in one run before giving up.
        rollback_lr_factor: learning-rate multiplier applied at each rollback.
        explode_factor: a loss above this × the median of the recent losses diverges.
        seed: seeds initialisation, order and augmentation (per epoch).
        num_workers: DataLoader worker processes.
        device: ``auto`` (or ``None``: CUDA when available, else Apple's MPS, else the
            CPU), ``cpu``, ``cuda``, ``mps`` or another torch device name; in a
            data-parallel run ``cuda`` is the process's own GPU (``LOCAL_RANK``).
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    lr_step_epoch: int = 20
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0
    grad_clip: float | None = None
    amp: str = "auto"
    channels_last: str = "auto"
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5
    explode_factor: float = 10.0
    seed: int = 0
    num_workers: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0 and math.isfinite(self.lr),
            "optimizer": self.optimizer in ("sgd", "adam"),
            "schedule": self.schedule in SCHEDULES,
            "lr_step_epoch": self.lr_step_epoch >= 1,
            "lr_gamma": 0 < self.lr_gamma <= 1,
            "warmup_epochs": self.warmup_epochs >= 0,
            "grad_clip": self.grad_clip is None or self.grad_clip > 0,
            "amp": self.amp in ("auto", "on", "off", "fp16", "bf16"),
            "channels_last": self.channels_last in ("auto", "on", "off"),
            "max_rollbacks": self.max_rollbacks >= 0,
            "rollback_lr_factor": 0 < self.rollback_lr_factor < 1,
            "explode_factor": self.explode_factor > 1,
            "num_workers": self.num_workers >= 0,
        }
        refuse_invalid(
            self,
            checks,
            what="training settings",
            need="epochs ≥ 1, batch_size ≥ 2, lr > 0, optimizer sgd|adam, schedule "
            f"{'|'.join(SCHEDULES)}, lr_step_epoch ≥ 1, 0 < lr_gamma ≤ 1, warmup_epochs ≥ 0, "
            "grad_clip > 0 or none, amp auto|on|off|fp16|bf16, channels_last auto|on|off, "
            "max_rollbacks ≥ 0, "
            "0 < rollback_lr_factor < 1, explode_factor > 1, num_workers ≥ 0",
        )

    def epoch_lr(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch`` before warm-up and rollbacks."""
        if self.schedule == "step":
            return self.lr * (self.lr_gamma if epoch >= self.lr_step_epoch else 1.0)
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1.0 + math.cos(math.pi * epoch / self.epochs))
        return self.lr

    def step_lr(
        self, epoch: int, global_step: int, steps_per_epoch: int, lr_factor: float = 1.0
    ) -> float:
        """Learning rate of optimiser step ``global_step`` (0-based) in ``epoch``."""
        warmup_steps = round(self.warmup_epochs * steps_per_epoch)
        warm = min(1.0, (global_step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        return self.epoch_lr(epoch) * warm * lr_factor


def build_optimizer(settings: EngineSettings, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (the papers') or Adam over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_generator(seed: int) -> torch.Generator:
    """The generator of an epoch's shuffle, advanced past one draw.

    Up to issue #15 the progress bar (``tqdm.auto``) opened a second iterator of the
    loader and dropped it, which drew its worker seed from this generator (and, with
    workers, started processes that were never used). The bar no longer does; this draw
    keeps every epoch's order and worker seeds what they were, so runs and their
    measured results stay reproducible across the change.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.empty((), dtype=torch.int64).random_(generator=gen)
    return gen


def resolve_device(settings: EngineSettings, local_rank: int = 0) -> torch.device:
    """The configured device; ``auto`` picks CUDA, else MPS, else the CPU. ``cuda`` means
    GPU ``local_rank`` (one GPU per process of a data-parallel run)."""
    name = settings.device or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name in ("cuda", "mps") and not _available(name):
        raise TrainingError(f"--device {name} was asked for, but this machine has no {name}")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def _available(name: str) -> bool:
    return torch.cuda.is_available() if name == "cuda" else torch.backends.mps.is_available()


def enabled_on(flag: str, device: torch.device) -> bool:
    """Whether an ``auto``/``on``/``off`` speed-up (mixed precision, ``channels_last``) is on:
    ``auto`` turns it on for CUDA only (``fp16``/``bf16``: mixed precision of that type)."""
    return flag in ("on", "fp16", "bf16") or (flag == "auto" and device.type == "cuda")


def amp_dtype(flag: str) -> torch.dtype:
    """The autocast type of an ``amp`` setting: bfloat16 for ``bf16``, else float16."""
    return torch.bfloat16 if flag == "bf16" else torch.float16
