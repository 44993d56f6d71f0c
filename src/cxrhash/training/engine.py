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

The device and the loader live here only, so multi-process training plugs in here: under
``torchrun`` (``training.distributed``) rank 0 settles the run folder first, every rank
trains its share of each batch with batch norm over the global batch (``training.sync_bn``)
and the ranks' gradients summed after each backward pass, and only rank 0 validates, writes
files, logs and shows progress; a task must say it can run so (``data_parallel``).

This module is the driver (:func:`fit`: set up or resume, train an epoch, roll back or
validate and checkpoint, finish); its parts are ``training.settings`` (settings,
schedule, optimiser, device, seeding), ``training.task`` (the :class:`Task` protocol),
``training.epoch`` (one epoch's steps), ``training.guard`` (divergence checks and
snapshots), ``training.run_folder`` (checkpoints, resume checks, the run's JSON files)
and ``training.curves`` (the PNG). Their public names are importable from here too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cxrhash.training import distributed
from cxrhash.training.curves import plot_history
from cxrhash.training.epoch import EpochResult, Learner, train_epoch
from cxrhash.training.errors import DivergenceError, TrainingError
from cxrhash.training.guard import (
    MIN_LOSSES_FOR_REFERENCE,
    MIN_REFERENCE_LOSS,
    RECENT_LOSSES,
    DivergenceGuard,
    Rollback,
    Snapshot,
    restore_snapshot,
    take_snapshot,
)
from cxrhash.training.run_folder import (
    FORMAT_VERSION,
    check_resume_config,
    checkpoint_payload,
    load_state,
    open_run,
    save_checkpoint,
    write_epoch_files,
)
from cxrhash.training.settings import (
    SCHEDULES,
    EngineSettings,
    amp_dtype,
    build_optimizer,
    enabled_on,
    resolve_device,
    seed_everything,
)
from cxrhash.training.sync_bn import globalize_batch_norm
from cxrhash.training.task import StepOutput, Task

LOG = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "MIN_LOSSES_FOR_REFERENCE",
    "MIN_REFERENCE_LOSS",
    "RECENT_LOSSES",
    "SCHEDULES",
    "DivergenceError",
    "EngineSettings",
    "FitResult",
    "Rollback",
    "StepOutput",
    "Task",
    "TrainingError",
    "build_optimizer",
    "check_resume_config",
    "fit",
    "load_state",
    "plot_history",
    "save_checkpoint",
    "seed_everything",
]


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


@dataclass
class RunState:
    """What the engine carries from epoch to epoch (``last.pt`` saves all but the counts).

    ``epoch`` is the 0-based epoch to run next; ``previous`` the snapshot taken at the
    start of the epoch before it, for a divergence at an epoch's very first step: the
    state it would roll back to is then the damaged one (the last update of the epoch
    before is never checked by a loss before it is saved).
    """

    guard: DivergenceGuard
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"score": -math.inf, "epoch": -1})
    rollbacks: list[Rollback] = field(default_factory=list)
    lr_factor: float = 1.0
    global_step: int = 0
    epoch: int = 0
    start_epoch: int = 0
    skipped: list[Any] = field(default_factory=list)
    images_seen: int = 0
    previous: Snapshot | None = None

    @classmethod
    def resumed(cls, saved: dict[str, Any], explode_factor: float) -> RunState:
        """The state ``last.pt`` saved (the run continues with the epoch after it)."""
        engine = saved["engine"]
        start = saved["epoch"] + 1
        return cls(
            guard=DivergenceGuard(explode_factor, [float(x) for x in engine["recent_losses"]]),
            history=saved["history"],
            best=saved["best"],
            rollbacks=[Rollback(**r) for r in engine["rollbacks"]],
            lr_factor=float(engine["lr_factor"]),
            global_step=int(engine["global_step"]),
            epoch=start,
            start_epoch=start,
        )

    def engine_entry(self) -> dict[str, Any]:
        """The checkpoint's ``engine`` entry, what :meth:`resumed` reads back."""
        return {
            "lr_factor": self.lr_factor,
            "global_step": self.global_step,
            "rollbacks": [asdict(r) for r in self.rollbacks],
            "recent_losses": list(self.guard.recent),
        }


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
    device = join_processes(task, settings)
    progress = progress and distributed.is_main()
    saved = settle_run(run_dir, task, config, settings.epochs, resume)
    learner, state = start_run(task, settings, saved, run_dir, device)
    t_start = time.perf_counter()
    while state.epoch < settings.epochs:
        # The state to roll back to: what last.pt holds (or the initial state).
        snapshot = take_snapshot(
            task,
            learner.model,
            learner.optimizer,
            state.guard,
            state.global_step,
            len(state.history),
        )
        result = train_epoch(
            task,
            learner,
            settings,
            state.guard,
            epoch=state.epoch,
            global_step=state.global_step,
            lr_factor=state.lr_factor,
            progress=progress,
        )
        if result.divergence is not None:
            roll_back(state, snapshot, result, task, learner, settings, progress)
            continue
        state.global_step = result.global_step
        end_epoch(state, result, task, learner, settings, run_dir, config, progress)
        state.previous = snapshot
        state.epoch += 1
    return finish_run(state, task, learner, settings, run_dir, time.perf_counter() - t_start)


def join_processes(task: Task, settings: EngineSettings) -> torch.device:
    """The device of this process; under a launcher for N > 1 processes, join their group
    (after checking that the task and the batch can be shared out)."""
    device = resolve_device(settings, distributed.local_rank())
    distributed.init_from_env(device.type)
    if not distributed.active():
        return device
    world = distributed.world_size()
    if not getattr(task, "data_parallel", False):
        raise TrainingError(f"{task.kind} training cannot run in several processes")
    if settings.batch_size % world or settings.batch_size // world < 1:
        raise TrainingError(
            f"batch size {settings.batch_size} (the global batch) must be a multiple of "
            f"the {world} processes"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not distributed.is_main():
        logging.getLogger("cxrhash").setLevel(logging.ERROR)
    return device


def settle_run(
    run_dir: Path, task: Task, config: Mapping[str, Any], epochs: int, resume: bool
) -> dict[str, Any] | None:
    """Open the run folder and prepare the task: rank 0 first (it writes ``config.json`` and
    e.g. the split), then the other ranks, which read what it wrote; an error on rank 0
    stops every rank."""
    saved: dict[str, Any] | None = None
    error: Exception | None = None
    if distributed.is_main():
        try:
            saved = open_run(run_dir, task, config, epochs, resume)
            task.prepare(run_dir, saved)
        except Exception as exc:  # every rank must hear of it, or the others wait forever
            error = exc
    failed = distributed.from_main(None if error is None else str(error))
    if error is not None:
        raise error
    if failed is not None:
        raise TrainingError(f"the run could not start on rank 0: {failed}")
    if not distributed.is_main():
        saved = open_run(run_dir, task, config, epochs, resume, write=False)
        task.prepare(run_dir, saved)
    return saved


def start_run(
    task: Task,
    settings: EngineSettings,
    saved: dict[str, Any] | None,
    run_dir: Path,
    device: torch.device,
) -> tuple[Learner, RunState]:
    """Seed, build the model and optimiser on the device; restore ``saved`` on resume."""
    seed_everything(settings.seed)
    model = task.build_model().to(device)
    if distributed.active():
        model = globalize_batch_norm(model)
    if enabled_on(settings.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(settings, model)
    use_amp = enabled_on(settings.amp, device)
    dtype = amp_dtype(settings.amp)
    # bfloat16 needs no loss scaling (float32's exponent range)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and dtype == torch.float16)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    distributed.broadcast_state(model)
    learner = Learner(model, optimizer, scaler, device, use_amp, dtype)
    if saved is None:
        return learner, RunState(guard=DivergenceGuard(settings.explode_factor))
    state = RunState.resumed(saved, settings.explode_factor)
    task.load_state_dict(saved["task_state"])
    LOG.info("resuming %s at epoch %d", run_dir, state.start_epoch + 1)
    return learner, state


def roll_back(
    state: RunState,
    snapshot: Snapshot,
    result: EpochResult,
    task: Task,
    learner: Learner,
    settings: EngineSettings,
    progress: bool,
) -> None:
    """Undo the diverged epoch: restore its start (the epoch before's when it diverged at
    its first step), lower the learning rate and record the rollback; give up with
    :class:`DivergenceError` once ``max_rollbacks`` rollbacks were used."""
    assert result.divergence is not None
    step, loss, reason = result.divergence.step, result.divergence.loss, result.divergence.reason
    if len(state.rollbacks) >= settings.max_rollbacks:
        raise DivergenceError(
            f"training diverged at epoch {state.epoch + 1}, step {step} ({reason}) after "
            f"{len(state.rollbacks)} rollback(s) with the learning rate cut to "
            f"{state.lr_factor:g} × its schedule; lower --lr, set --grad-clip, or use a "
            "bounded --hash-activation (docs/design.md)"
        )
    state.lr_factor *= settings.rollback_lr_factor
    detected = state.epoch + 1
    if result.n_batches == 0 and state.previous is not None:
        snapshot, state.previous, state.epoch = state.previous, None, state.epoch - 1
        del state.history[snapshot.history_len :]
    to_epoch = state.epoch + 1
    state.rollbacks.append(Rollback(detected, step, loss, reason, state.lr_factor, to_epoch))
    LOG.warning(
        "epoch %d step %d: %s; rolled back to the start of epoch %d, learning rate "
        "now %g × its schedule (rollback %d of at most %d)",
        detected,
        step,
        reason,
        to_epoch,
        state.lr_factor,
        len(state.rollbacks),
        settings.max_rollbacks,
    )
    if progress:
        tqdm.write(
            f"divergence at epoch {detected} step {step}: {reason}; "
            f"rolled back to the start of epoch {to_epoch}"
        )
    state.global_step = restore_snapshot(
        snapshot, task, learner.model, learner.optimizer, state.guard
    )


def end_epoch(
    state: RunState,
    result: EpochResult,
    task: Task,
    learner: Learner,
    settings: EngineSettings,
    run_dir: Path,
    config: Mapping[str, Any],
    progress: bool,
) -> None:
    """Validate the finished epoch, record it, and write ``last.pt`` (``best.pt`` when the
    score improved), ``history.json`` and ``rollbacks.json``."""
    epoch, main = state.epoch, distributed.is_main()
    if result.n_batches == 0:
        raise TrainingError(f"epoch {epoch + 1}: no batch with two readable images")
    count_skipped(state.skipped, result.skipped)
    state.images_seen += result.n_images
    scores = distributed.from_main(task.validate(learner.model, epoch) if main else {})
    lr = settings.step_lr(
        epoch, max(state.global_step - 1, 0), result.steps_per_epoch, state.lr_factor
    )
    rollbacks = sum(1 for r in state.rollbacks if r.epoch == epoch + 1)
    record = result.record(epoch, lr, scores, rollbacks)
    state.history.append(record)
    improved = False
    if task.score_key is not None:
        score = float(scores[task.score_key])
        improved = score > state.best["score"] or state.best["epoch"] < 0
        if improved:
            state.best = {"score": score, "epoch": epoch + 1, "metric": task.score_key}
    if main:
        save_epoch(state, task, learner, config, run_dir, improved)
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


def save_epoch(
    state: RunState,
    task: Task,
    learner: Learner,
    config: Mapping[str, Any],
    run_dir: Path,
    improved: bool,
) -> None:
    """Write the finished epoch's checkpoints and JSON files (rank 0's job)."""
    payload = checkpoint_payload(
        task,
        learner.model,
        learner.optimizer,
        config,
        state.epoch,
        best=state.best,
        history=state.history,
        engine=state.engine_entry(),
    )
    write_epoch_files(
        run_dir, payload, improved=improved, history=state.history, rollbacks=state.rollbacks
    )


def count_skipped(skipped: list[Any], new: list[Any]) -> None:
    """Add the epoch's unreadable items to ``skipped``: a bad file once, not once per epoch."""
    known = {_skip_key(item) for item in skipped}
    for item in new:
        if _skip_key(item) not in known:
            known.add(_skip_key(item))
            skipped.append(item)


def _skip_key(item: Any) -> Any:
    """What identifies a skipped item across epochs: its file, else its case and index."""
    path = getattr(item, "path", None)
    return path if path else (getattr(item, "case_id", None), getattr(item, "idx", None))


def finish_run(
    state: RunState,
    task: Task,
    learner: Learner,
    settings: EngineSettings,
    run_dir: Path,
    seconds: float,
) -> FitResult:
    """Plot the curves, let the task write its outputs, and report the run."""
    if distributed.is_main():
        plot_history(state.history, run_dir / task.curves_name, task.score_key)
        task.finish(learner.model, run_dir)
    if state.skipped:
        LOG.warning("%d unreadable training images were skipped", len(state.skipped))
    return FitResult(
        run_dir=run_dir,
        epochs_run=settings.epochs - state.start_epoch,
        best_epoch=int(state.best["epoch"]),
        best_score=float(state.best["score"]),
        seconds=seconds,
        images_per_second=state.images_seen / max(seconds, 1e-9),
        history=state.history,
        rollbacks=state.rollbacks,
        skipped=state.skipped,
    )
