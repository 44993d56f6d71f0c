"""The run folder the engine writes: ``config.json``, the ``last.pt``/``best.pt`` checkpoints,
``history.json`` and ``rollbacks.json``; refusing to overwrite a run, and the resume checks.

Checkpoints are plain tensors and Python values (format :data:`FORMAT_VERSION`), written
atomically and read with ``torch.load(weights_only=True)`` only, so reading one never runs
code (``docs/design.md``, "Checkpoints").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cxrhash
from cxrhash.training.errors import TrainingError
from cxrhash.training.guard import Rollback
from cxrhash.training.task import Task

FORMAT_VERSION = 2  # 1: before the engine (pickled, not weights-only safe)


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


def open_run(
    run_dir: Path,
    task: Task,
    config: Mapping[str, Any],
    epochs: int,
    resume: bool,
    *,
    write: bool = True,
) -> dict[str, Any] | None:
    """Settle the run folder and write ``config.json`` (unless not ``write``: the other
    ranks of a data-parallel run); the saved ``last.pt`` on resume.

    Raises:
        TrainingError: a run in the folder without ``resume``; with it, nothing to resume,
            a config (or task check) that differs, or more epochs done than ``epochs``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "last.pt"
    saved: dict[str, Any] | None = None
    if resume:
        if not last.exists():
            raise TrainingError(f"nothing to resume: {last} does not exist")
        saved = load_state(last, task.kind)
        check_resume_config(saved["config"], config, task.resumable)
        task.check_resume(saved)
        if saved["epoch"] + 1 > epochs:
            raise TrainingError(
                f"cannot resume: the run already did {saved['epoch'] + 1} epochs, more than "
                f"epochs={epochs}"
            )
    elif last.exists():
        raise TrainingError(
            f"{run_dir} already holds a run (last.pt); pass --resume to continue it "
            "or choose another --out"
        )
    if write:
        write_json(run_dir / "config.json", dict(config))
    return saved


def checkpoint_payload(
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Mapping[str, Any],
    epoch: int,
    *,
    best: dict[str, Any],
    history: list[dict[str, Any]],
    engine: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint after 0-based ``epoch`` (``engine``: the learning-rate factor, global
    step, rollbacks and recent losses the engine resumes from)."""
    return {
        "format": FORMAT_VERSION,
        "kind": task.kind,
        "package_version": cxrhash.__version__,
        "config": dict(config),
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best": best,
        "history": history,
        "engine": engine,
        "task_state": task.state_dict(),
        **task.checkpoint_extra(model),
    }


def write_epoch_files(
    run_dir: Path,
    payload: Mapping[str, Any],
    *,
    improved: bool,
    history: list[dict[str, Any]],
    rollbacks: list[Rollback],
) -> None:
    """``best.pt`` (when ``improved``), ``last.pt``, ``history.json`` and ``rollbacks.json``."""
    if improved:
        save_checkpoint(run_dir / "best.pt", payload)
    save_checkpoint(run_dir / "last.pt", payload)
    write_json(run_dir / "history.json", history)
    write_json(run_dir / "rollbacks.json", [asdict(r) for r in rollbacks])


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON atomically (dicts with sorted keys)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=isinstance(value, dict)))
    os.replace(tmp, path)
