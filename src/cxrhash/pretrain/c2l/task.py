"""C2L pretraining as a task of the training engine, and the engine's settings for it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from cxrhash.losses.terms import loss_terms
from cxrhash.pretrain.c2l.config import (
    RESUMABLE_CHANGES,
    SGD_MOMENTUM,
    WEIGHT_DECAY,
    C2LConfig,
    PretrainError,
)
from cxrhash.pretrain.c2l.model import C2LModel, draw_mixup
from cxrhash.pretrain.c2l.pretext import PRETEXT_IMAGES, instance_top1, pretext_views
from cxrhash.pretrain.export import backbone_state_dict
from cxrhash.pretrain.probe import KnnProbe
from cxrhash.pretrain.unlabeled import UnlabeledImages, collate_views
from cxrhash.training.run_folder import save_checkpoint
from cxrhash.training.settings import EngineSettings
from cxrhash.training.task import StepOutput


class C2LTask:
    """C2L pretraining as a task of the training engine (:func:`cxrhash.training.engine.fit`).

    The engine runs SGD on the query encoder (the key encoder has no trainable
    parameters); after each step the task moves the key encoder by momentum and
    enqueues the batch's keys. ``last.pt`` each epoch, and ``backbone.pt`` at the end.
    After every epoch it records ``pretext_top1`` (:func:`instance_top1` on 256 fixed view
    pairs: does the network tell the images apart at all?). When the images carry labels,
    the k-NN probe of the query backbone (``pretrain.probe``)
    is recorded after every epoch (``knn_probe``), beside its value at initialisation
    (``knn_probe_init``), chance (``knn_probe_chance``) and the same k-NN on 16 × 16
    thumbnails (``knn_probe_pixels``: no network at all); it never selects a checkpoint.
    """

    kind: str = "c2l"
    curves_name: str = "pretrain_curves.png"
    score_key: str | None = None
    resumable: tuple[str, ...] = (*RESUMABLE_CHANGES, "data")

    def __init__(self, config: C2LConfig, dataset: UnlabeledImages) -> None:
        self.config = config
        self.dataset = dataset
        self.fingerprint = dataset.fingerprint()
        self.skipped: set[str] = set()
        self._keys: Tensor | None = None
        self.probe = KnnProbe.from_folder(
            dataset.root, dataset.files, config.image_size, config.probe_images, config.seed
        )
        self.probe_init: float | None = None
        self.pretext = pretext_views(dataset, PRETEXT_IMAGES, config.seed)

    def prepare(self, run_dir: Path, saved: Mapping[str, Any] | None) -> None:
        if saved is not None:
            self.skipped = set(saved["skipped_files"])

    def build_model(self) -> nn.Module:
        return C2LModel(self.config.backbone, self.config.dim, self.config.queue)

    def train_set(self) -> Dataset:
        return self.dataset

    def collate(self, items: list[Any]) -> dict[str, Any]:
        return collate_views(items)

    def on_epoch_start(self, model: nn.Module, epoch: int, steps_per_epoch: int) -> None:
        if self.probe is not None and self.probe_init is None and epoch == 0:
            assert isinstance(model, C2LModel)
            self.probe_init = self.probe.score(model.encoder_q.backbone)

    def training_step(
        self, model: nn.Module, batch: dict[str, Any], device: torch.device
    ) -> StepOutput | None:
        self.skipped.update(s.path for s in batch["skipped"] if s.path)
        if batch["query"] is None or len(batch["idx"]) < 2:
            return None
        view_q, view_k = batch["query"].to(device), batch["key"].to(device)
        lam, perm = draw_mixup(self.config, len(view_q))
        key_order = torch.randperm(len(view_q)) if self.config.bn_groups > 1 else None
        parts, self._keys = model(
            view_q,
            view_k,
            lam=lam,
            perm=None if perm is None else perm.to(device),
            temperature=self.config.temperature,
            feature_mixup=self.config.feature_mixup,
            bn_groups=self.config.bn_groups,
            key_order=None if key_order is None else key_order.to(device),
        )
        return StepOutput(parts["total"], loss_terms(**parts), len(view_q))

    def after_step(self, model: nn.Module) -> None:
        assert isinstance(model, C2LModel) and self._keys is not None
        model.momentum_update(self.config.momentum)
        model.enqueue(self._keys)
        self._keys = None

    def validate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        assert isinstance(model, C2LModel)
        scores: dict[str, float] = {}
        if self.pretext is not None:
            scores["pretext_top1"] = instance_top1(model, self.pretext)
            scores["pretext_top1_chance"] = 1.0 / len(self.pretext[0])
        if self.probe is None:
            return scores
        scores.update(
            knn_probe=self.probe.score(model.encoder_q.backbone),
            knn_probe_chance=self.probe.chance,
            knn_probe_pixels=self.probe.pixel_score(),
        )
        if self.probe_init is not None:
            scores["knn_probe_init"] = self.probe_init
        return scores

    def checkpoint_extra(self, model: nn.Module) -> dict[str, Any]:
        return {
            "method": "c2l",
            "data_fingerprint": self.fingerprint,
            "skipped_files": sorted(self.skipped),
        }

    def check_resume(self, saved: Mapping[str, Any]) -> None:
        if saved.get("data_fingerprint") != self.fingerprint:
            raise PretrainError(
                "cannot resume: the image list differs from the one the run started on"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"probe_init": self.probe_init}  # the queue is a buffer of the model

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        value = state.get("probe_init")
        self.probe_init = None if value is None else float(value)

    def finish(self, model: nn.Module, run_dir: Path) -> None:
        assert isinstance(model, C2LModel)
        save_checkpoint(
            run_dir / "backbone.pt",
            {
                "state_dict": backbone_state_dict(model.encoder_q.backbone, self.config.backbone),
                "arch": self.config.backbone,
                "method": "c2l",
                "image_size": self.config.image_size,
                "epochs": self.config.epochs,
            },
        )


def engine_settings(config: C2LConfig, device: str | None = None) -> EngineSettings:
    """SGD (momentum 0.9, weight decay 1e-4), cosine from ``lr`` towards 0 over the epochs."""
    return EngineSettings(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        optimizer="sgd",
        momentum=SGD_MOMENTUM,
        weight_decay=WEIGHT_DECAY,
        schedule="cosine",
        seed=config.seed,
        num_workers=config.num_workers,
        device=device,
    )
