"""Hashing training: any registered method as a task of the training engine.

A run directory holds ``config.json``, ``split.json`` (patient-disjoint parts as
case ids), ``last.pt`` (every epoch), ``best.pt`` (best validation score),
``history.json``, ``rollbacks.json``, ``training_curves.png`` and
``train_summary.json``. Model selection uses the validation part only (its images
query a fixed sample of training images), never the test queries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from cxrhash.config import TrainConfig
from cxrhash.data.dataset import CXRDataset, SkippedSample, collate_skipping
from cxrhash.data.labels import label_names, relevance_labels, with_no_finding, with_no_finding_np
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import load_split, make_split, save_split
from cxrhash.encode import encode_dataset
from cxrhash.evaluation.evaluate import peak_memory_mb
from cxrhash.evaluation.metrics import retrieval_metrics
from cxrhash.index.codes import hamming_rank
from cxrhash.methods import METHODS, EpochInfo, Method
from cxrhash.methods.base import LossContext
from cxrhash.methods.code_bank import CodeBank
from cxrhash.models.output import HashOutput
from cxrhash.training import distributed
from cxrhash.training.checkpoint import model_fingerprint
from cxrhash.training.code_rotation import rotate_best_checkpoint
from cxrhash.training.engine import (
    DivergenceError,
    EngineSettings,
    Rollback,
    StepOutput,
    TrainingError,
    fit,
)

LOG = logging.getLogger(__name__)

__all__ = ["DivergenceError", "TrainResult", "TrainingError", "engine_settings", "train"]

# Config keys that may change when a run is resumed (the rest fix the model, data or recipe).
RESUMABLE = ("epochs", "num_workers", "device")


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    epochs_run: int
    best_epoch: int
    best_score: float
    train_seconds: float
    images_per_second: float
    peak_memory_mb: float
    skipped: list[SkippedSample] = field(default_factory=list)
    rollbacks: list[Rollback] = field(default_factory=list)


def resolve_split(config: TrainConfig, dataset: CXRDataset, run_dir: Path) -> dict[str, np.ndarray]:
    """Load ``split.json`` of the run, or make (``make_split``: official parts where the data
    has them, else seeded patient-disjoint) and save it."""
    path = run_dir / "split.json"
    if path.exists():
        return load_split(path, dataset.case_ids)
    official = Path(config.official_split) if config.official_split else None
    split = make_split(
        dataset.case_ids, dataset.patient_ids, config.split_fractions, config.seed, official
    )
    for part in ("train", "val"):
        if len(split.get(part, [])) == 0:
            raise TrainingError(
                f"split part {part!r} is empty: {len(dataset)} images of "
                f"{len(set(dataset.patient_ids))} patients split by patient with fractions "
                f"{config.split_fractions}; use more images or other --split-fractions"
            )
    save_split(path, split, dataset.case_ids)
    return split


def validation_score(
    val_codes: np.ndarray,
    val_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    metric: str,
) -> float:
    """Validation score: validation images query a fixed sample of training images.

    This is the literature protocol on the validation split; the test queries and
    the held-out database are never looked at during training.
    """
    order, dist = hamming_rank(val_codes, db_codes, None)
    k = _k_of(metric)
    ks = tuple(sorted({10, 100} | ({k} if k else set())))
    m = retrieval_metrics(order, val_labels, db_labels, ks=ks, distances=dist)
    if metric not in m:
        raise TrainingError(f"unknown validation metric {metric!r}; available: {sorted(m)}")
    return float(m[metric])


def _k_of(metric: str) -> int:
    tail = metric.split("@")[-1] if "@" in metric else ""
    return int(tail) if tail.isdigit() else 0


def engine_settings(config: TrainConfig) -> EngineSettings:
    """The engine's settings for a hashing config."""
    return EngineSettings(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        optimizer=config.optimizer,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        schedule="step",
        lr_step_epoch=config.lr_step_epoch,
        lr_gamma=config.lr_gamma,
        warmup_epochs=config.warmup_epochs,
        grad_clip=config.grad_clip,
        amp=config.amp,
        channels_last=config.channels_last,
        max_rollbacks=config.max_rollbacks,
        rollback_lr_factor=config.rollback_lr_factor,
        seed=config.seed,
        num_workers=config.num_workers,
        device=config.device,
    )


def gather_output(out: HashOutput, counts: list[int]) -> HashOutput:
    """``out`` with the per-image fields of every rank (``distributed.gather_rows``)."""
    if len(counts) == 1:
        return out
    rows = {
        name: distributed.gather_rows(value, counts)
        for name in ("hash", "logits", "features", "attention", "aux_logits")
        if (value := getattr(out, name)) is not None
    }
    return replace(out, **rows)


class HashingTask:
    """A registered hashing method on a dataset, as a task of :func:`engine.fit`."""

    kind: str = "hashing"
    data_parallel: bool = True  # the loss is of the gathered global batch
    curves_name: str = "training_curves.png"
    resumable: tuple[str, ...] = RESUMABLE

    def __init__(self, config: TrainConfig, method: Method, dataset: CXRDataset) -> None:
        self.config = config
        self.method = method
        self.dataset = dataset.with_image_size(config.image_size, augment=False)
        self.score_key: str | None = f"val_{config.val_metric}"
        self.names = label_names(self.dataset.pathologies, config.no_finding_class)
        self.bank: CodeBank | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._epoch: EpochInfo | None = None
        self._step = 0  # batches of the current epoch so far (a rollback restarts the epoch)

    def prepare(self, run_dir: Path, saved: Mapping[str, Any] | None) -> None:
        """Resolve the split and build the training, validation and validation-database sets."""
        config = self.config
        split = resolve_split(config, self.dataset, run_dir)
        self._fit_set = self.dataset.subset(split["train"])  # unaugmented
        self._train = self._fit_set.with_image_size(config.image_size, augment=config.augment)
        self.val_set = self.dataset.subset(split["val"])
        # A fixed, seeded sample of training images serves as the validation database.
        rng = np.random.default_rng(config.seed)
        n_db = min(len(split["train"]), config.val_database_max)
        self.val_db_set = self.dataset.subset(
            np.sort(rng.choice(split["train"], n_db, replace=False))
        )
        no_finding = config.no_finding_class
        self.val_labels = relevance_labels(with_no_finding_np(self.val_set.labels, no_finding))
        self.val_db_labels = relevance_labels(
            with_no_finding_np(self.val_db_set.labels, no_finding)
        )
        if self.method.uses_bank is not None and self.method.uses_bank(config):
            train_labels = relevance_labels(with_no_finding_np(self._train.labels, no_finding))
            self.bank = CodeBank(train_labels, config.bits)

    def build_model(self) -> nn.Module:
        return self.method.build_model(self.config, len(self.names))

    def train_set(self) -> Dataset:
        return self._train

    def collate(self, items: list[Any]) -> dict[str, Any]:
        return collate_skipping(items)

    def on_epoch_start(self, model: nn.Module, epoch: int, steps_per_epoch: int) -> None:
        self._epoch = EpochInfo(epoch, self.config.epochs, steps_per_epoch)
        self._step = 0
        if self.method.on_epoch is not None:
            self.method.on_epoch(model, self._epoch, self.config)

    def training_step(
        self, model: nn.Module, batch: dict[str, Any], device: torch.device
    ) -> StepOutput | None:
        """The method's loss of the batch; in a data-parallel run of the global batch (every
        rank's rows gathered, pairs across ranks included), with a gradient through this
        rank's rows only (``training.distributed``)."""
        step, self._step = self._step, self._step + 1
        n = 0 if batch["img"] is None else len(batch["case_id"])
        counts = distributed.all_counts(n, device)
        if min(counts) == 0 or sum(counts) < 2:
            return None  # contrastive pairs need two images (every rank skips alike)
        targets = with_no_finding(batch["lab"], self.config.no_finding_class).to(device)
        out = gather_output(model(batch["img"].to(device, non_blocking=True)), counts)
        targets = distributed.gather_rows(targets, counts)
        index = distributed.gather_rows(batch["idx"].to(device), counts).cpu()
        if self.bank is None and not self.method.takes_context:
            loss, parts = self.method.loss(out, targets, self.config)
        else:
            context = LossContext(index, self.bank, self._epoch, step)
            loss, parts = self.method.loss(out, targets, self.config, context)
            if self.bank is not None:
                self._pending = (index, out.hash.detach())
        return StepOutput(loss, parts, sum(counts))

    def after_step(self, model: nn.Module) -> None:
        """Write the accepted step's codes into the bank (never those of a rolled-back step)."""
        if self.bank is not None and self._pending is not None:
            self.bank.update(*self._pending)
        self._pending = None

    def state_dict(self) -> dict[str, Any]:
        return {"bank": self.bank.state_dict()} if self.bank is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.bank is not None:
            self.bank.load_state_dict(state["bank"])

    def validate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        bs = self.config.batch_size
        enc = encode_dataset(model, self.val_set, batch_size=bs, progress=False)
        enc_db = encode_dataset(model, self.val_db_set, batch_size=bs, progress=False)
        score = validation_score(
            enc.codes,
            self.val_labels[enc.indices],
            enc_db.codes,
            self.val_db_labels[enc_db.indices],
            self.config.val_metric,
        )
        return {f"val_{self.config.val_metric}": score}

    def checkpoint_extra(self, model: nn.Module) -> dict[str, Any]:
        return {
            "label_names": list(self.names),
            "pathologies": list(self.dataset.pathologies),
            "model_id": model_fingerprint(model.state_dict(), asdict(self.config)),
        }

    def check_resume(self, saved: Mapping[str, Any]) -> None:
        return None

    def finish(self, model: nn.Module, run_dir: Path) -> None:
        """Fit the best model's code rotation when the method asks for it (``best.pt``
        is rewritten with it; its statistics go to ``code_rotation.json``)."""
        rotates = self.method.rotates_codes
        best = run_dir / "best.pt"
        if rotates is None or not rotates(self.config) or not best.exists():
            return
        rotate_best_checkpoint(
            run_dir, model, self._fit_set, batch_size=self.config.batch_size, seed=self.config.seed
        )


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    dataset: CXRDataset | None = None,
) -> TrainResult:
    """Train ``config.method`` on ``config.data``; write the run to ``run_dir``.

    Args:
        config: the resolved configuration (saved as ``config.json``).
        run_dir: output directory; with ``resume`` it must hold ``last.pt``.
        resume: continue from ``run_dir/last.pt``; only ``epochs`` and
            ``num_workers`` may differ from the saved run.
        progress: show progress bars.
        dataset: an already opened dataset (otherwise ``open_dataset(config.data)``).

    Raises:
        TrainingError: a split part is empty, or resume finds an incompatible run.
        DivergenceError: the loss diverged after every allowed rollback.
    """
    run_dir = Path(run_dir)
    method = METHODS.get(config.method)
    method.params(config)  # unknown --param names fail before any work
    if dataset is None:
        dataset = open_dataset(config.data, config.image_size)
    task = HashingTask(config, method, dataset)
    settings = engine_settings(config)
    result = fit(task, settings, run_dir, asdict(config), resume=resume, progress=progress)
    summary = TrainResult(
        run_dir=run_dir,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        best_score=result.best_score,
        train_seconds=result.seconds,
        images_per_second=result.images_per_second,
        peak_memory_mb=peak_memory_mb(),
        skipped=list(result.skipped),
        rollbacks=result.rollbacks,
    )
    if distributed.is_main():
        write_summary(run_dir, summary)
    return summary


def write_summary(run_dir: Path, summary: TrainResult) -> None:
    """``train_summary.json``: the run's figures, skipped files and rollbacks."""
    (run_dir / "train_summary.json").write_text(
        json.dumps(
            {
                **{
                    k: v
                    for k, v in asdict(summary).items()
                    if k not in ("run_dir", "skipped", "rollbacks")
                },
                "skipped": [asdict(s) for s in summary.skipped],
                "rollbacks": [asdict(r) for r in summary.rollbacks],
            },
            indent=2,
        )
    )
