"""``cxrhash pretrain --method c2l``: C2L pretraining of a backbone on a folder of images."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cxrhash.pretrain.c2l.config import C2LConfig, PretrainError
from cxrhash.pretrain.c2l.task import C2LTask, engine_settings
from cxrhash.pretrain.unlabeled import UnlabeledImages
from cxrhash.training.engine import fit
from cxrhash.training.errors import TrainingError

LOG = logging.getLogger(__name__)


def pretrain_c2l(
    config: C2LConfig,
    data_dir: Path,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Pretrain ``config.backbone`` with C2L on the unlabelled images of ``data_dir``.

    Writes to ``out_dir`` (through the training engine): ``config.json``;
    ``last.pt`` after every epoch (both encoders, queue, optimiser, epoch,
    config; atomic); ``backbone.pt`` (the query backbone as ``{"state_dict":
    <torchvision keys>, "arch", "method", "image_size", "epochs"}``: pass it as
    ``--backbone-weights``); ``history.json``; ``pretrain_curves.png``.

    Args:
        config: the settings.
        data_dir: folder with ``manifest.csv`` (column ``file``) or image files.
        out_dir: output folder; with ``resume`` it must hold ``last.pt``.
        resume: continue from ``last.pt``; only ``epochs`` and ``num_workers`` may change.
        progress: show a progress bar.
        device: torch device; default CUDA when available, else CPU.

    Returns:
        A summary: output paths, epochs run, image and skipped-file counts, final
        loss, images per second and seconds.

    Raises:
        PretrainError: too few images, an existing run without ``resume``, an
            incompatible resume, or a loss that kept diverging.
    """
    dataset = UnlabeledImages(
        Path(data_dir),
        config.image_size,
        max_images=config.max_images,
        seed=config.seed,
        augment_strength=config.augment_strength,
    )
    if len(dataset) < 2:
        raise PretrainError(f"{data_dir} holds {len(dataset)} image(s); contrast needs at least 2")
    task = C2LTask(config, dataset)
    record = {**asdict(config), "data": str(data_dir)}
    try:
        result = fit(
            task,
            engine_settings(config, device),
            Path(out_dir),
            record,
            resume=resume,
            progress=progress,
        )
    except PretrainError:
        raise
    except TrainingError as exc:
        raise PretrainError(str(exc)) from exc
    if task.skipped:
        LOG.warning("%d unreadable images were skipped", len(task.skipped))
    history = result.history
    return {
        "out_dir": str(out_dir),
        "backbone_weights": str(Path(out_dir) / "backbone.pt"),
        "epochs_run": result.epochs_run,
        "images": len(dataset),
        "skipped_files": len(task.skipped),
        "final_loss": history[-1]["loss_total"] if history else float("nan"),
        "knn_probe": history[-1].get("knn_probe") if history else None,
        "knn_probe_init": task.probe_init,
        "pretext_top1": history[-1].get("pretext_top1") if history else None,
        "pretext_top1_chance": history[-1].get("pretext_top1_chance") if history else None,
        "knn_probe_chance": None if task.probe is None else task.probe.chance,
        "knn_probe_pixels": None if task.probe is None else task.probe.pixel_score(),
        "images_per_second": result.images_per_second,
        "seconds": result.seconds,
    }
