"""The one training engine that hashing training and C2L pretraining both run on.

A :class:`Task` supplies the model, the training set, the loss of a batch and
(optionally) validation and hooks; the engine owns everything else:

* the run folder: ``config.json``, ``last.pt`` every epoch, ``best.pt`` at the best
  validation score, ``history.json``, a curves PNG; refusing to overwrite a run,
  and on resume refusing any setting that differs from the saved run except the
  ones the task lists as changeable (the epoch budget, worker count);
* per-epoch seeding (a resumed run equals an uninterrupted one), the data loader;
* the optimiser and the learning rate: SGD or Adam, linear warm-up, then one step
  drop or a cosine, applied per step (stateless, so nothing to restore on resume);
* gradient clipping, mixed precision and ``channels_last`` where the device has them;
* the divergence guard: a non-finite loss or gradient, or a loss ``explode_factor``
  (10) times the recent median, rolls the model and optimiser back to the start of the
  epoch (the state ``last.pt`` holds), multiplies the learning rate by
  ``rollback_lr_factor``, logs it and records it in the history, and gives up with
  :class:`DivergenceError` after ``max_rollbacks`` rollbacks in one run.

The device and the loader live here only, so multi-process training plugs in here.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import statistics
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

import cxrhash

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 1: before the engine (pickled, not weights-only safe)
SCHEDULES = ("step", "cosine", "constant")
# Losses this many times the recent median (or 1, whichever is larger) count as exploding.
MIN_REFERENCE_LOSS = 1.0
RECENT_LOSSES = 50
MIN_LOSSES_FOR_REFERENCE = 5


class TrainingError(ValueError):
    """Training cannot start or continue (bad split, config mismatch on resume, …)."""


class DivergenceError(TrainingError):
    """The loss kept diverging after every allowed rollback."""


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
        amp: ``auto`` (on for CUDA), ``on`` or ``off``: float16 autocast + loss scaling.
        channels_last: ``auto`` (on for CUDA), ``on`` or ``off``.
        max_rollbacks: divergence rollbacks allowed in one run before giving up.
        rollback_lr_factor: learning-rate multiplier applied at each rollback.
        explode_factor: a loss above this × the median of the recent losses diverges.
        seed: seeds initialisation, order and augmentation (per epoch).
        num_workers: DataLoader worker processes.
        device: torch device; ``None`` = CUDA when available, else CPU.
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
            "amp": self.amp in ("auto", "on", "off"),
            "channels_last": self.channels_last in ("auto", "on", "off"),
            "max_rollbacks": self.max_rollbacks >= 0,
            "rollback_lr_factor": 0 < self.rollback_lr_factor < 1,
            "explode_factor": self.explode_factor > 1,
            "num_workers": self.num_workers >= 0,
        }
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise TrainingError(
                "invalid training settings: " + ", ".join(bad) + " (need epochs ≥ 1, "
                "batch_size ≥ 2, lr > 0, optimizer sgd|adam, schedule "
                f"{'|'.join(SCHEDULES)}, lr_step_epoch ≥ 1, 0 < lr_gamma ≤ 1, warmup_epochs ≥ 0, "
                "grad_clip > 0 or none, amp/channels_last auto|on|off, max_rollbacks ≥ 0, "
                "0 < rollback_lr_factor < 1, explode_factor > 1, num_workers ≥ 0)"
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


@dataclass
class StepOutput:
    """What a task's training step returns: the loss to minimise and its parts as floats."""

    loss: torch.Tensor
    parts: dict[str, float]
    n_images: int


class Task(Protocol):
    """What a training job supplies to :func:`fit`.

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


@dataclass
class Rollback:
    """One divergence the guard rolled back."""

    epoch: int  # 1-based
    step: int  # 1-based step within the epoch
    loss: float
    reason: str
    lr_factor: float  # the factor in force after the rollback
    to_epoch: int = 0  # 1-based epoch training went back to the start of (0: not recorded)


@dataclass
class FitResult:
    """What a finished run reports."""

    run_dir: Path
    epochs_run: int
    best_epoch: int
    best_score: float
    seconds: float
    images_per_second: float
    history: list[dict[str, Any]]
    rollbacks: list[Rollback] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Write atomically (temp file + rename) so a kill mid-save keeps the previous file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(payload), tmp)
    os.replace(tmp, path)


def load_state(path: Path, kind: str) -> dict[str, Any]:
    """Read an engine checkpoint of ``kind`` with ``weights_only=True`` (never runs code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        # torch's own text suggests weights_only=False, which would run the file's code
        raise TrainingError(
            f"cannot read checkpoint {path}: not a cxrhash checkpoint (unreadable, or it "
            f"holds objects other than tensors and plain values; {type(exc).__name__})"
        ) from exc
    if not isinstance(state, dict) or "format" not in state:
        raise TrainingError(f"{path} is not a cxrhash checkpoint")
    if state["format"] != FORMAT_VERSION:
        raise TrainingError(
            f"{path} is a cxrhash checkpoint of format {state['format']!r}; this version reads "
            f"format {FORMAT_VERSION}: train the model again with this version"
        )
    if state.get("kind") != kind:
        raise TrainingError(f"{path} is a {state.get('kind')!r} checkpoint, not {kind!r}")
    return state


def _skip_key(item: Any) -> Any:
    """What identifies a skipped item across epochs: its file, else its case and index."""
    path = getattr(item, "path", None)
    return path if path else (getattr(item, "case_id", None), getattr(item, "idx", None))


def check_resume_config(
    saved: Mapping[str, Any], config: Mapping[str, Any], resumable: Iterable[str]
) -> None:
    """Refuse to resume with settings that differ from the saved run's, except ``resumable``."""
    free = set(resumable)
    keys = sorted((set(saved) | set(config)) - free)
    diffs = [k for k in keys if saved.get(k) != config.get(k)]
    if diffs:
        raise TrainingError(
            "cannot resume: the run was started with different "
            + ", ".join(f"{k} ({saved.get(k)!r} vs {config.get(k)!r})" for k in diffs)
            + f"; only {', '.join(sorted(free)) or 'nothing'} may change on resume "
            "(start a new run with another --out to change the rest)"
        )


def _device(settings: EngineSettings) -> torch.device:
    if settings.device:
        return torch.device(settings.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _enabled(flag: str, device: torch.device) -> bool:
    return flag == "on" or (flag == "auto" and device.type == "cuda")


def build_optimizer(settings: EngineSettings, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (the papers') or Adam over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


class _Guard:
    """Decides whether a step diverged: non-finite, or far above the recent median."""

    def __init__(self, factor: float, recent: Iterable[float] = ()) -> None:
        self.factor = factor
        self.recent: deque[float] = deque(recent, maxlen=RECENT_LOSSES)

    def check(self, loss: float) -> str | None:
        if not math.isfinite(loss):
            return f"loss became {loss}"
        if len(self.recent) >= MIN_LOSSES_FOR_REFERENCE:
            ref = max(abs(statistics.median(self.recent)), MIN_REFERENCE_LOSS)
            if abs(loss) > self.factor * ref:
                return f"loss {loss:.4g} exploded (> {self.factor:g} × recent median {ref:.4g})"
        return None

    def accept(self, loss: float) -> None:
        self.recent.append(loss)


def fit(
    task: Task,
    settings: EngineSettings,
    run_dir: Path,
    config: Mapping[str, Any],
    *,
    resume: bool = False,
    progress: bool = True,
) -> FitResult:
    """Train ``task`` into ``run_dir`` (see the module docstring for what is written).

    Args:
        task: the job (model, data, loss, validation, hooks).
        settings: optimisation settings.
        run_dir: the run folder; with ``resume`` it must hold ``last.pt``.
        config: the resolved, JSON-serialisable configuration (``config.json``).
        resume: continue from ``last.pt``; only ``task.resumable`` keys may differ.
        progress: show progress bars.

    Raises:
        TrainingError: an existing run without ``resume``, nothing to resume, an
            incompatible resume.
        DivergenceError: the loss diverged again after ``max_rollbacks`` rollbacks.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "last.pt"
    saved: dict[str, Any] | None = None
    if resume:
        if not last.exists():
            raise TrainingError(f"nothing to resume: {last} does not exist")
        saved = load_state(last, task.kind)
        check_resume_config(saved["config"], config, task.resumable)
        task.check_resume(saved)
        if saved["epoch"] + 1 > settings.epochs:
            raise TrainingError(
                f"cannot resume: the run already did {saved['epoch'] + 1} epochs, more than "
                f"epochs={settings.epochs}"
            )
    elif last.exists():
        raise TrainingError(
            f"{run_dir} already holds a run (last.pt); pass --resume to continue it "
            "or choose another --out"
        )
    _write_json(run_dir / "config.json", dict(config))

    task.prepare(run_dir, saved)
    device = _device(settings)
    seed_everything(settings.seed)
    model = task.build_model().to(device)
    if _enabled(settings.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(settings, model)
    use_amp = _enabled(settings.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -math.inf, "epoch": -1}
    rollbacks: list[Rollback] = []
    lr_factor = 1.0
    global_step = 0
    recent: list[float] = []
    start_epoch = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        history, best, start_epoch = saved["history"], saved["best"], saved["epoch"] + 1
        engine = saved["engine"]
        lr_factor, global_step = float(engine["lr_factor"]), int(engine["global_step"])
        rollbacks = [Rollback(**r) for r in engine["rollbacks"]]
        recent = [float(x) for x in engine["recent_losses"]]
        task.load_state_dict(saved["task_state"])
        LOG.info("resuming %s at epoch %d", run_dir, start_epoch + 1)
    guard = _Guard(settings.explode_factor, recent)

    skipped: list[Any] = []
    t_start = time.perf_counter()
    images_seen = 0
    epoch = start_epoch
    # The start of the previous epoch, for a divergence at an epoch's very first step: the
    # state it would roll back to is then the damaged one (the last update of the epoch
    # before is never checked by a loss before it is saved).
    previous: dict[str, Any] | None = None
    while epoch < settings.epochs:
        # The state to roll back to: what last.pt holds (or the initial state).
        snapshot = _snapshot(task, model, optimizer, guard, global_step)
        snapshot["history_len"] = len(history)
        # Per-epoch seeding makes a resumed (or rolled-back) epoch replay the same order.
        seed_everything(settings.seed * 1000 + epoch)
        gen = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
        data = task.train_set()
        loader = DataLoader(
            data,
            batch_size=settings.batch_size,
            shuffle=True,
            generator=gen,
            num_workers=settings.num_workers,
            collate_fn=task.collate,
            drop_last=len(data) > settings.batch_size,  # type: ignore[arg-type]
        )
        task.on_epoch_start(model, epoch, len(loader))
        model.train()
        sums: dict[str, float] = {}
        grad_norms: list[float] = []
        n_batches = n_img = 0
        epoch_skipped: list[Any] = []
        diverged: tuple[int, float, str] | None = None
        t0 = time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"{task.kind} epoch {epoch + 1}/{settings.epochs}",
            disable=not progress,
            leave=False,
        )
        for step, batch in enumerate(bar, start=1):
            epoch_skipped.extend(batch.get("skipped", []))
            lr = settings.step_lr(epoch, global_step, len(loader), lr_factor)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, enabled=use_amp):
                out = task.training_step(model, batch, device)
            if out is None:
                continue
            loss_value = float(out.loss.detach())
            reason = guard.check(loss_value)
            if reason is None:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(out.loss).backward()
                scaler.unscale_(optimizer)
                norm = _clip(model, settings.grad_clip)
                if not math.isfinite(norm) and not use_amp:
                    reason = f"gradient norm became {norm}"
            if reason is not None:
                diverged = (step, loss_value, reason)
                break
            scaler.step(optimizer)
            scaler.update()
            task.after_step(model)
            guard.accept(loss_value)
            global_step += 1
            if math.isfinite(norm):  # with loss scaling an overflowing step is skipped
                grad_norms.append(norm)
            n_batches += 1
            n_img += out.n_images
            for k, v in out.parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            rate = n_img / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{rate:.1f}")
        bar.close()
        if diverged is not None:
            step, loss_value, reason = diverged
            if len(rollbacks) >= settings.max_rollbacks:
                raise DivergenceError(
                    f"training diverged at epoch {epoch + 1}, step {step} ({reason}) after "
                    f"{len(rollbacks)} rollback(s) with the learning rate cut to "
                    f"{lr_factor:g} × its schedule; lower --lr, set --grad-clip, or use a "
                    "bounded --hash-activation (docs/design.md)"
                )
            lr_factor *= settings.rollback_lr_factor
            detected = epoch + 1
            if n_batches == 0 and previous is not None:
                snapshot, previous, epoch = previous, None, epoch - 1
                del history[snapshot["history_len"] :]
            rollbacks.append(Rollback(detected, step, loss_value, reason, lr_factor, epoch + 1))
            LOG.warning(
                "epoch %d step %d: %s; rolled back to the start of epoch %d, learning rate "
                "now %g × its schedule (rollback %d of at most %d)",
                detected,
                step,
                reason,
                epoch + 1,
                lr_factor,
                len(rollbacks),
                settings.max_rollbacks,
            )
            if progress:
                tqdm.write(
                    f"divergence at epoch {detected} step {step}: {reason}; "
                    f"rolled back to the start of epoch {epoch + 1}"
                )
            global_step = _restore(snapshot, task, model, optimizer, guard)
            continue
        if n_batches == 0:
            raise TrainingError(f"epoch {epoch + 1}: no batch with two readable images")
        known = {_skip_key(item) for item in skipped}
        for item in epoch_skipped:  # a bad file is counted once, not once per epoch
            if _skip_key(item) not in known:
                known.add(_skip_key(item))
                skipped.append(item)
        seconds = time.perf_counter() - t0
        images_seen += n_img
        scores = task.validate(model, epoch)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": settings.step_lr(epoch, max(global_step - 1, 0), len(loader), lr_factor),
            **{f"loss_{k}": v / n_batches for k, v in sums.items()},
            **scores,
            "steps": n_batches,
            "grad_norm_mean": float(np.mean(grad_norms)) if grad_norms else math.nan,
            "grad_norm_max": float(np.max(grad_norms)) if grad_norms else math.nan,
            "images_per_second": n_img / max(seconds, 1e-9),
            "seconds": seconds,
            "rollbacks": sum(1 for r in rollbacks if r.epoch == epoch + 1),
        }
        history.append(record)
        improved = False
        if task.score_key is not None:
            score = float(scores[task.score_key])
            improved = score > best["score"] or best["epoch"] < 0
            if improved:
                best = {"score": score, "epoch": epoch + 1, "metric": task.score_key}
        payload = {
            "format": FORMAT_VERSION,
            "kind": task.kind,
            "package_version": cxrhash.__version__,
            "config": dict(config),
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "best": best,
            "history": history,
            "engine": {
                "lr_factor": lr_factor,
                "global_step": global_step,
                "rollbacks": [asdict(r) for r in rollbacks],
                "recent_losses": list(guard.recent),
            },
            "task_state": task.state_dict(),
            **task.checkpoint_extra(model),
        }
        if improved:
            save_checkpoint(run_dir / "best.pt", payload)
        save_checkpoint(last, payload)
        _write_json(run_dir / "history.json", history)
        _write_json(run_dir / "rollbacks.json", [asdict(r) for r in rollbacks])
        summary = "  ".join(
            [f"loss {record.get('loss_total', float('nan')):.4f}"]
            + [f"{k} {v:.4f}" for k, v in scores.items()]
            + [f"{record['images_per_second']:.1f} img/s"]
        )
        LOG.info("%s epoch %d: %s%s", task.kind, epoch + 1, summary, " (best)" if improved else "")
        if progress:
            tqdm.write(
                f"{task.kind} epoch {epoch + 1}/{settings.epochs}  {summary}"
                + ("  *best*" if improved else "")
            )
        previous = snapshot
        epoch += 1

    seconds = time.perf_counter() - t_start
    plot_history(history, run_dir / task.curves_name, task.score_key)
    task.finish(model, run_dir)
    if skipped:
        LOG.warning("%d unreadable training images were skipped", len(skipped))
    return FitResult(
        run_dir=run_dir,
        epochs_run=settings.epochs - start_epoch,
        best_epoch=int(best["epoch"]),
        best_score=float(best["score"]),
        seconds=seconds,
        images_per_second=images_seen / max(seconds, 1e-9),
        history=history,
        rollbacks=rollbacks,
        skipped=skipped,
    )


def _clip(model: nn.Module, max_norm: float | None) -> float:
    """Clip the global gradient norm to ``max_norm`` (if set); return the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    limit = max_norm if max_norm is not None else math.inf
    return float(torch.nn.utils.clip_grad_norm_(params, limit))


def _snapshot(
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    guard: _Guard,
    global_step: int,
) -> dict[str, Any]:
    return {
        "task": copy.deepcopy(task.state_dict()),
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "recent": list(guard.recent),
        "global_step": global_step,
    }


def _restore(
    snapshot: dict[str, Any],
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    guard: _Guard,
) -> int:
    task.load_state_dict(snapshot["task"])
    model.load_state_dict(snapshot["model"])
    optimizer.load_state_dict(snapshot["optimizer"])
    guard.recent.clear()
    guard.recent.extend(snapshot["recent"])
    return int(snapshot["global_step"])


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=isinstance(value, dict)))
    os.replace(tmp, path)


def plot_history(history: list[dict[str, Any]], path: Path, score_key: str | None) -> None:
    """Loss terms, learning rate and (if any) the validation score per epoch, as a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    panels = 3 if score_key else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.2))
    for key in sorted(k for k in history[0] if k.startswith("loss_")):
        axes[0].plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key[5:])
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize=8)
    axes[1].plot(epochs, [h["lr"] for h in history], marker="o", color="C7")
    rolled = [h["epoch"] for h in history if h.get("rollbacks")]
    for e in rolled:
        axes[1].axvline(e, color="C3", linestyle=":", linewidth=1)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("learning rate" + (" (red: rollback)" if rolled else ""))
    if score_key:
        axes[2].plot(epochs, [h.get(score_key, np.nan) for h in history], marker="o", color="C3")
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel(f"validation {score_key}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
