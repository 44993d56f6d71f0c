"""One training epoch: the seeded loader, then per step the learning rate, the task's loss,
the divergence guard, backward, gradient clipping and the optimiser step.

A step the guard refuses (or whose gradient norm is not finite) is not applied and ends
the epoch: :class:`EpochResult` then carries the :class:`Divergence` and the engine rolls
back (:mod:`cxrhash.training.engine`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrhash.training import distributed
from cxrhash.training.guard import DivergenceGuard
from cxrhash.training.settings import EngineSettings, epoch_generator, seed_everything
from cxrhash.training.task import StepOutput, Task


@dataclass
class Learner:
    """The model and what updates it, on its device."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    use_amp: bool
    amp_dtype: torch.dtype = torch.float16


@dataclass
class Divergence:
    """The step that was not applied, and why."""

    step: int  # 1-based within the epoch
    loss: float
    reason: str


@dataclass
class EpochResult:
    """What an epoch's accepted steps add up to (and the divergence that ended it, if any)."""

    steps_per_epoch: int
    global_step: int  # optimiser steps of the run after this epoch's accepted ones
    sums: dict[str, float] = field(default_factory=dict)
    grad_norms: list[float] = field(default_factory=list)
    n_batches: int = 0
    n_images: int = 0
    skipped: list[Any] = field(default_factory=list)
    divergence: Divergence | None = None
    seconds: float = 0.0

    def add_step(self, out: StepOutput, grad_norm: float) -> None:
        """Count an applied step: its loss parts, images and gradient norm."""
        self.global_step += 1
        if math.isfinite(grad_norm):  # with loss scaling an overflowing step is skipped
            self.grad_norms.append(grad_norm)
        self.n_batches += 1
        self.n_images += out.n_images
        for k, v in out.parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def record(
        self, epoch: int, lr: float, scores: dict[str, float], rollbacks: int
    ) -> dict[str, Any]:
        """The epoch's ``history.json`` entry: mean loss parts, scores, speed, rollbacks."""
        norms = self.grad_norms
        return {
            "epoch": epoch + 1,
            "lr": lr,
            **{f"loss_{k}": v / self.n_batches for k, v in self.sums.items()},
            **scores,
            "steps": self.n_batches,
            "grad_norm_mean": float(np.mean(norms)) if norms else math.nan,
            "grad_norm_max": float(np.max(norms)) if norms else math.nan,
            "images_per_second": self.n_images / max(self.seconds, 1e-9),
            "seconds": self.seconds,
            "rollbacks": rollbacks,
        }


def epoch_loader(
    task: Task, settings: EngineSettings, epoch: int, pin_memory: bool = False
) -> DataLoader:
    """The epoch's shuffled loader, after seeding every RNG with seed·1000 + epoch, so a
    resumed or rolled-back epoch replays the same order and augmentation (``pin_memory``:
    page-locked batches for a faster copy to a GPU)."""
    seed_everything(settings.seed * 1000 + epoch)
    gen = epoch_generator(settings.seed * 1000 + epoch)
    data = task.train_set()
    if distributed.active():
        return rank_loader(task, settings, data, settings.seed * 1000 + epoch, pin_memory)
    return DataLoader(
        data,
        batch_size=settings.batch_size,
        shuffle=True,
        generator=gen,
        num_workers=settings.num_workers,
        collate_fn=task.collate,
        drop_last=len(data) > settings.batch_size,  # type: ignore[arg-type]
        pin_memory=pin_memory,
    )


def rank_loader(
    task: Task, settings: EngineSettings, data: Any, seed: int, pin_memory: bool
) -> DataLoader:
    """This rank's loader in a data-parallel run: its rows of the single-process batches
    (``distributed.rank_order``), ``batch_size / N`` per step; its own augmentation seed."""
    per_rank = settings.batch_size // distributed.world_size()
    order = distributed.rank_order(len(data), seed)
    seed_everything(distributed.rank_seed(seed))
    return DataLoader(
        data,
        batch_size=per_rank,
        sampler=order,
        generator=torch.Generator().manual_seed(distributed.rank_seed(seed)),
        num_workers=settings.num_workers,
        collate_fn=task.collate,
        drop_last=len(order) > per_rank,
        pin_memory=pin_memory,
    )


def train_epoch(
    task: Task,
    learner: Learner,
    settings: EngineSettings,
    guard: DivergenceGuard,
    *,
    epoch: int,
    global_step: int,
    lr_factor: float,
    progress: bool,
) -> EpochResult:
    """Train 0-based ``epoch`` until its end or the first step that diverges."""
    loader = epoch_loader(task, settings, epoch, pin_memory=learner.device.type == "cuda")
    task.on_epoch_start(learner.model, epoch, len(loader))
    learner.model.train()
    result = EpochResult(steps_per_epoch=len(loader), global_step=global_step)
    t0 = time.perf_counter()
    # The bar is fed by hand: tqdm.auto wrapping the loader opens a second iterator of it
    # (tqdm_asyncio calls iter() in its constructor), which, with workers, started a set of
    # worker processes that was never used (its draw is kept: ``epoch_generator``).
    bar = tqdm(
        total=len(loader),
        desc=f"{task.kind} epoch {epoch + 1}/{settings.epochs}",
        disable=not progress,
        leave=False,
    )
    for step, batch in enumerate(loader, start=1):
        bar.update(1)
        result.skipped.extend(batch.get("skipped", []))
        lr = settings.step_lr(epoch, result.global_step, len(loader), lr_factor)
        for group in learner.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(learner.device.type, dtype=learner.amp_dtype, enabled=learner.use_amp):
            out = task.training_step(learner.model, batch, learner.device)
        if out is None:
            continue
        loss_value = float(out.loss.detach())
        reason = agreed(guard.check(loss_value), learner.device)
        if reason is None:
            norm, reason = backward(learner, out.loss, settings.grad_clip)
            reason = agreed(reason, learner.device)
        if reason is not None:
            result.divergence = Divergence(step, loss_value, reason)
            break
        learner.scaler.step(learner.optimizer)
        learner.scaler.update()
        task.after_step(learner.model)
        guard.accept(loss_value)
        result.add_step(out, norm)
        rate = result.n_images / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{rate:.1f}")
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def agreed(reason: str | None, device: torch.device) -> str | None:
    """``reason``, or a reason of its own when another rank refuses the step: every rank of
    a data-parallel run applies a step or none does."""
    if distributed.any_rank(reason is not None, device) and reason is None:
        return "the step diverged on another process"
    return reason


def backward(
    learner: Learner, loss: torch.Tensor, grad_clip: float | None
) -> tuple[float, str | None]:
    """Back-propagate ``loss`` and clip the gradients: the gradient norm before clipping,
    and why the step must not be applied (``None``: it may).

    In a data-parallel run ``loss`` is the global batch's loss with a gradient through this
    rank's rows only, so the sum of the ranks' gradients is the single-process gradient.
    """
    learner.optimizer.zero_grad(set_to_none=True)
    learner.scaler.scale(loss).backward()
    distributed.sum_gradients(learner.model)
    learner.scaler.unscale_(learner.optimizer)
    norm = clip_gradients(learner.model, grad_clip)
    if not math.isfinite(norm) and not learner.scaler.is_enabled():
        return norm, f"gradient norm became {norm}"
    return norm, None


def clip_gradients(model: nn.Module, max_norm: float | None) -> float:
    """Clip the global gradient norm to ``max_norm`` (if set); return the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    limit = max_norm if max_norm is not None else math.inf
    return float(torch.nn.utils.clip_grad_norm_(params, limit))
