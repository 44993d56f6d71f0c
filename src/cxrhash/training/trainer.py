"""The one training loop: any registered method, checkpoints each epoch, resumable.

A run directory holds ``config.json``, ``split.json`` (patient-disjoint parts as
case ids), ``last.pt`` (every epoch), ``best.pt`` (best validation score),
``history.json`` and ``training_curves.png``. Model selection uses the
validation part only (its images query a fixed sample of training images), never
the test queries.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cxrhash.config import TrainConfig
from cxrhash.data.dataset import CXRDataset, SkippedSample
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import (
    load_split,
    official_nih_split,
    patient_disjoint_split,
    save_split,
)
from cxrhash.encode import encode_dataset, make_loader
from cxrhash.evaluation.evaluate import peak_memory_mb
from cxrhash.evaluation.metrics import retrieval_metrics
from cxrhash.index.codes import hamming_rank
from cxrhash.methods import METHODS, EpochInfo
from cxrhash.training.checkpoint import load_checkpoint, make_payload, save_checkpoint
from cxrhash.training.targets import (
    label_names,
    relevance_labels,
    with_no_finding,
    with_no_finding_np,
)

LOG = logging.getLogger(__name__)


class TrainingError(ValueError):
    """Training cannot start or continue (bad split, config mismatch on resume, …)."""


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU) RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_split(config: TrainConfig, dataset: CXRDataset, run_dir: Path) -> dict[str, np.ndarray]:
    """Load ``split.json`` of the run, or make and save a seeded patient-disjoint split."""
    path = run_dir / "split.json"
    if path.exists():
        return load_split(path, dataset.case_ids)
    if config.official_split:
        split = official_nih_split(
            dataset.case_ids,
            dataset.patient_ids,
            Path(config.official_split),
            config.split_fractions,
            config.seed,
        )
    else:
        split = patient_disjoint_split(dataset.patient_ids, config.split_fractions, config.seed)
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


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or Adam."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    raise TrainingError(f"unknown optimizer {config.optimizer!r}; use 'sgd' or 'adam'")


def _check_resume_config(saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to resume with a config that changes the model or the data."""
    mine = asdict(config)
    fixed = (
        "data",
        "method",
        "backbone",
        "feature_stage",
        "variant",
        "bits",
        "image_size",
        "method_params",
    )
    diffs = [k for k in fixed if saved.get(k) != mine.get(k)]
    if diffs:
        raise TrainingError(
            "cannot resume: the run was trained with different "
            + ", ".join(f"{k} ({saved.get(k)!r} vs {mine.get(k)!r})" for k in diffs)
        )


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    dataset: CXRDataset | None = None,
) -> TrainResult:
    """Train ``config.method`` on ``config.data``; write checkpoints to ``run_dir``.

    Args:
        config: the resolved configuration (saved as ``config.json``).
        run_dir: output directory; with ``resume`` it must hold ``last.pt``.
        resume: continue from ``run_dir/last.pt`` (same data, model and split).
        progress: show progress bars.
        dataset: an already opened dataset (otherwise ``open_dataset(config.data)``).

    Raises:
        TrainingError: a split part is empty, or resume finds an incompatible run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    method = METHODS.get(config.method)
    method.params(config)  # unknown --param names fail before any work
    state: dict[str, Any] | None = None
    if resume:
        if not (run_dir / "last.pt").exists():
            raise TrainingError(f"nothing to resume: {run_dir / 'last.pt'} does not exist")
        state = load_checkpoint(run_dir / "last.pt")
        _check_resume_config(state["config"], config)
    elif (run_dir / "last.pt").exists():
        raise TrainingError(
            f"{run_dir} already holds a run (last.pt); pass --resume to continue it "
            "or choose another --out"
        )
    config.save(run_dir / "config.json")

    if dataset is None:
        dataset = open_dataset(config.data, config.image_size)
    dataset = dataset.with_image_size(config.image_size, augment=False)
    split = resolve_split(config, dataset, run_dir)
    for part in ("train", "val"):
        if len(split.get(part, [])) == 0:
            raise TrainingError(f"split part {part!r} is empty; check --split-fractions")
    train_set = dataset.subset(split["train"]).with_image_size(
        config.image_size, augment=config.augment
    )
    val_set = dataset.subset(split["val"])
    # A fixed, seeded sample of training images serves as the validation database.
    rng = np.random.default_rng(config.seed)
    n_db = min(len(split["train"]), config.val_database_max)
    val_db_set = dataset.subset(np.sort(rng.choice(split["train"], n_db, replace=False)))
    val_db_labels = relevance_labels(with_no_finding_np(val_db_set.labels, config.no_finding_class))
    names = label_names(dataset.pathologies, config.no_finding_class)
    val_labels = relevance_labels(with_no_finding_np(val_set.labels, config.no_finding_class))

    seed_everything(config.seed)
    model = method.build_model(config, len(names))
    optimizer = build_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=max(1, config.lr_step_epoch), gamma=config.lr_gamma
    )
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -1.0, "epoch": -1}
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        LOG.info("resuming %s at epoch %d", run_dir, start_epoch + 1)

    skipped: list[SkippedSample] = []
    t_start = time.perf_counter()
    images_seen = 0
    for epoch in range(start_epoch, config.epochs):
        # Per-epoch seeding makes a resumed run identical to an uninterrupted one.
        seed_everything(config.seed * 1000 + epoch)
        gen = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        loader = make_loader(
            train_set,
            config.batch_size,
            config.num_workers,
            shuffle=True,
            generator=gen,
            drop_last=len(train_set) > config.batch_size,
        )
        if method.on_epoch is not None:
            method.on_epoch(model, EpochInfo(epoch, config.epochs, len(loader)), config)
        model.train()
        sums: dict[str, float] = {}
        n_batches = 0
        t0 = time.perf_counter()
        n_img = 0
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False
        )
        for batch in bar:
            skipped.extend(batch["skipped"])
            if batch["img"] is None or len(batch["case_id"]) < 2:
                continue  # contrastive pairs need two images
            targets = with_no_finding(batch["lab"], config.no_finding_class)
            out = model(batch["img"])
            loss, parts = method.loss(out, targets, config)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n_batches += 1
            n_img += len(batch["case_id"])
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            rate = n_img / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.1f}")
        scheduler.step()
        epoch_seconds = time.perf_counter() - t0
        images_seen += n_img

        enc = encode_dataset(model, val_set, batch_size=config.batch_size, progress=False)
        enc_db = encode_dataset(model, val_db_set, batch_size=config.batch_size, progress=False)
        score = validation_score(
            enc.codes,
            val_labels[enc.indices],
            enc_db.codes,
            val_db_labels[enc_db.indices],
            config.val_metric,
        )
        record = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            **{f"loss_{k}": v / max(n_batches, 1) for k, v in sums.items()},
            f"val_{config.val_metric}": score,
            "images_per_second": n_img / max(epoch_seconds, 1e-9),
            "seconds": epoch_seconds,
        }
        history.append(record)
        improved = bool(score > best["score"]) or best["epoch"] < 0
        if improved:
            best = {"score": float(score), "epoch": epoch + 1, "metric": config.val_metric}
        payload = make_payload(
            model=model,
            config=config,
            label_names=names,
            pathologies=dataset.pathologies,
            epoch=epoch,
            optimizer=optimizer,
            scheduler=scheduler,
            best=best,
            history=history,
        )
        if improved:
            save_checkpoint(run_dir / "best.pt", payload)
        save_checkpoint(run_dir / "last.pt", payload)
        (run_dir / "history.json").write_text(json.dumps(history, indent=2))
        LOG.info(
            "epoch %d: loss %.4f, val %s %.4f%s",
            epoch + 1,
            record.get("loss_total", float("nan")),
            config.val_metric,
            score,
            " (best)" if improved else "",
        )
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}/{config.epochs}  loss {record.get('loss_total', 0):.4f}  "
                f"val {config.val_metric} {score:.4f}  {record['images_per_second']:.1f} img/s"
                + ("  *best*" if improved else "")
            )
    train_seconds = time.perf_counter() - t_start
    _plot_history(history, run_dir / "training_curves.png", config.val_metric)
    if skipped:
        LOG.warning("%d unreadable training images were skipped", len(skipped))
    summary = TrainResult(
        run_dir=run_dir,
        epochs_run=config.epochs - start_epoch,
        best_epoch=int(best["epoch"]),
        best_score=float(best["score"]),
        train_seconds=train_seconds,
        images_per_second=images_seen / max(train_seconds, 1e-9),
        peak_memory_mb=peak_memory_mb(),
        skipped=skipped,
    )
    (run_dir / "train_summary.json").write_text(
        json.dumps(
            {
                **{k: v for k, v in asdict(summary).items() if k not in ("run_dir", "skipped")},
                "skipped": [asdict(s) for s in skipped],
            },
            indent=2,
        )
    )
    return summary


def _plot_history(history: list[dict[str, Any]], path: Path, metric: str) -> None:
    """Loss terms and the validation score per epoch, as a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in sorted(k for k in history[0] if k.startswith("loss_")):
        ax1.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key[5:])
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.legend(fontsize=8)
    ax2.plot(epochs, [h[f"val_{metric}"] for h in history], marker="o", color="C3")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"validation {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
