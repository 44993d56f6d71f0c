"""C2L ("Comparing to Learn", Zhou et al., MICCAI 2020): contrastive pretraining of a backbone.

MoCo-style self-supervision on unlabelled radiographs, plus image and feature
mixup. The output ``backbone.pt`` holds the query backbone in torchvision's own
key names, so ``cxrhash train --backbone-weights OUT/backbone.pt`` starts from it.

Model: query encoder = backbone cut at stage 4 → global average pool → 2-layer
MLP (C → C → ``dim``) → L2 normalisation; key encoder = a momentum copy
(``θ_k ← m·θ_k + (1 − m)·θ_q`` after every optimiser step), never trained by
gradients; a queue of ``K`` past keys supplies negatives.

Shuffled batch normalisation (MoCo's "shuffling BN", emulated on one device): both
encoders normalise over ``bn_groups`` sub-batches, and the key encoder sees the batch in
a random order, so an image's key is normalised with other images than its query. With
one BN batch for all, every query and key of a batch carry that batch's statistics, and
the network lowers the loss by telling the current batch from the queue instead of
telling images apart (measured: ``docs/recipes.md``, "C2L: why it did not learn").

Loss per batch of B images, each seen as a query view ``x`` and a key view
``x'`` (q = query encoder, k = key encoder, τ = temperature; all scores are
dot products of unit vectors divided by τ, and every term is a cross-entropy
over the logits of the B batch keys followed by the K queue entries; queue
entries always have target 0):

* ``moco``: q(x_a) with one-hot target on k(x'_a): InfoNCE whose negatives are
  the other batch keys and the queue.
* ``image_mixup``: x_mix = λ·x_a + (1 − λ)·x_π(a), λ ~ Beta(α, α) (one λ and one
  permutation π per batch); q(x_mix) with soft target λ on k_a and 1 − λ on k_π(a).
  With λ = 1 it equals ``moco``.
* ``feature_mixup``: k_mix,a = normalize(λ·k_a + (1 − λ)·k_π(a)), the same λ, π;
  q(x_mix) with one-hot target on k_mix,a against the other k_mix (mixtures that
  share a component with a's: hard negatives) and the queue. This is C2L's
  "mixed feature" positive for the mixed image.

Total = sum of the terms; ``mixup_alpha = 0`` leaves plain MoCo. After the step
the batch keys k(x') are enqueued (the oldest entries are overwritten).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from cxrhash.models.backbones import BACKBONES, GreyInputAdapter, create_backbone
from cxrhash.pretrain.probe import KnnProbe
from cxrhash.pretrain.unlabeled import UnlabeledImages, collate_views
from cxrhash.training.engine import (
    EngineSettings,
    StepOutput,
    TrainingError,
    fit,
    save_checkpoint,
)

LOG = logging.getLogger(__name__)

SGD_MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
# Fields that may differ when a run is resumed (the rest fix the model, data or schedule).
_RESUMABLE_CHANGES = ("epochs", "num_workers", "probe_images")


class PretrainError(TrainingError):
    """Pretraining cannot start or continue (bad config, no images, incompatible resume)."""


@dataclass
class C2LConfig:
    """Settings of a C2L pretraining run (saved in ``config.json`` and every checkpoint).

    Attributes:
        backbone: a name in ``BACKBONES``.
        image_size: side of the square views in pixels.
        epochs: passes over the images.
        batch_size: images per step (each gives two views).
        lr: initial SGD learning rate (momentum 0.9, weight decay 1e-4), cosine to 0.
        dim: output width of the projection head.
        queue: number of past keys kept as negatives.
        momentum: key-encoder moving-average coefficient m.
        temperature: softmax temperature τ.
        mixup_alpha: Beta(α, α) parameter of λ; 0 turns both mixup terms off.
        feature_mixup: add the feature-mixup term.
        bn_groups: sub-batches each encoder normalises over; the key encoder's are drawn
            from a shuffled batch (1 = one BN batch, no shuffling: the leak above).
        augment_strength: scales the views' crop, rotation and jitter
            (``pretrain.unlabeled.pretraining_augmentation``; 1 = crop 50–100 %, ±10°, ±40 %).
        seed: seeds initialisation, image order, augmentation and mixup.
        num_workers: DataLoader worker processes.
        max_images: use a seeded random subset of this many images.
        probe_images: size of the k-NN probe run after every epoch when the folder's
            ``manifest.csv`` has a ``label`` column (``pretrain.probe``); 0 turns it off.
    """

    backbone: str = "resnet18"
    image_size: int = 64
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.03
    dim: int = 128
    queue: int = 4096
    momentum: float = 0.999
    temperature: float = 0.2
    mixup_alpha: float = 1.0
    feature_mixup: bool = True
    bn_groups: int = 4
    augment_strength: float = 1.0
    seed: int = 0
    num_workers: int = 0
    max_images: int | None = None
    probe_images: int = 600

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise PretrainError(
                f"unknown backbone {self.backbone!r}; known: {', '.join(BACKBONES.names())}"
            )
        checks = {
            "image_size": self.image_size >= 8,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0,
            "dim": self.dim >= 1,
            "queue": self.queue >= 1,
            "momentum": 0.0 <= self.momentum < 1.0,
            "temperature": self.temperature > 0,
            "mixup_alpha": self.mixup_alpha >= 0,
            "bn_groups": 1 <= self.bn_groups <= self.batch_size,
            "augment_strength": 0.0 <= self.augment_strength <= 1.0,
            "num_workers": self.num_workers >= 0,
            "max_images": self.max_images is None or self.max_images >= 2,
            "probe_images": self.probe_images >= 0,
        }
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise PretrainError(
                "invalid C2L settings: " + ", ".join(bad) + " (need image_size ≥ 8, epochs ≥ 1, "
                "batch_size ≥ 2, lr > 0, dim ≥ 1, queue ≥ 1, 0 ≤ momentum < 1, temperature > 0, "
                "mixup_alpha ≥ 0, 1 ≤ bn_groups ≤ batch_size, 0 ≤ augment_strength ≤ 1, "
                "num_workers ≥ 0, max_images ≥ 2, probe_images ≥ 0)"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> C2LConfig:
        """Build from a dict, ignoring keys that are not fields."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# ---- loss: pure functions of unit vectors -------------------------------------------------


def soft_info_nce(
    q: Tensor, keys: Tensor, queue: Tensor, targets: Tensor, temperature: float
) -> Tensor:
    """Cross-entropy of ``softmax(q·[keys; queue]ᵀ/τ)`` against soft targets over ``keys``.

    Args:
        q: ``B×D`` unit query vectors.
        keys: ``B×D`` unit key vectors of the batch.
        queue: ``K×D`` unit key vectors (negatives: their target is 0).
        targets: ``B×B`` non-negative rows summing to 1 (row a = target over the batch keys).
        temperature: τ.

    Returns:
        The mean over the batch.
    """
    logits = q @ torch.cat([keys, queue]).T / temperature
    log_p = F.log_softmax(logits, dim=1)[:, : keys.shape[0]]
    return -(targets * log_p).sum(dim=1).mean()


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo InfoNCE: q_a's positive is k_a; other batch keys and the queue are negatives."""
    return soft_info_nce(
        q, k, queue, torch.eye(len(q), dtype=q.dtype, device=q.device), temperature
    )


def mixup_targets(perm: Tensor, lam: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """``B×B`` soft targets: λ at column a, 1 − λ at column ``perm[a]`` (summed if equal)."""
    eye = torch.eye(len(perm), dtype=dtype, device=perm.device)
    return lam * eye + (1.0 - lam) * eye[perm]


def c2l_loss(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    *,
    q_mix: Tensor | None = None,
    perm: Tensor | None = None,
    lam: float = 1.0,
    temperature: float = 0.2,
    feature_mixup: bool = True,
) -> dict[str, Tensor]:
    """The C2L loss terms (see the module docstring) and their sum under ``"total"``.

    Args:
        q: ``B×D`` unit queries of the query views.
        k: ``B×D`` unit keys of the key views (no gradient needed).
        queue: ``K×D`` unit keys of earlier batches.
        q_mix: ``B×D`` unit queries of the mixed query views; ``None`` = no mixup terms.
        perm: the permutation π used to mix (required with ``q_mix``).
        lam: the mixing weight λ of image ``a`` (1 − λ goes to ``π(a)``).
        temperature: τ.
        feature_mixup: add the feature-mixup term.
    """
    parts = {"moco": info_nce(q, k, queue, temperature)}
    if q_mix is not None:
        if perm is None:
            raise ValueError("c2l_loss: q_mix needs the permutation perm used to mix")
        targets = mixup_targets(perm, lam, q.dtype)
        parts["image_mixup"] = soft_info_nce(q_mix, k, queue, targets, temperature)
        if feature_mixup:
            k_mix = F.normalize(lam * k + (1.0 - lam) * k[perm], dim=1)
            parts["feature_mixup"] = info_nce(q_mix, k_mix, queue, temperature)
    parts["total"] = torch.stack(list(parts.values())).sum()
    return parts


# ---- model ----------------------------------------------------------------------------------


def grouped_forward(
    encoder: nn.Module, x: Tensor, groups: int, order: Tensor | None = None
) -> Tensor:
    """``encoder`` run on ``groups`` consecutive sub-batches of ``x[order]`` (its batch
    normalisation sees one sub-batch at a time), outputs put back in the order of ``x``.

    ``order`` = ``None`` keeps the batch order. With ``groups`` = 1 and no order this is
    ``encoder(x)``. A short last batch gets fewer groups, of at least 2 images each.
    """
    if order is not None:
        x = x[order]
    parts = x.tensor_split(max(1, min(groups, len(x) // 2)))
    out = torch.cat([encoder(part) for part in parts])
    if order is None:
        return out
    restored = torch.empty_like(out)
    restored[order] = out
    return restored


class ContrastiveEncoder(nn.Module):
    """Backbone (stage 4) → global average pool → MLP projection → unit vector."""

    def __init__(self, backbone: str, dim: int) -> None:
        super().__init__()
        spec = create_backbone(backbone, feature_stage=4)
        self.backbone = spec.module
        width = spec.out_channels
        self.head = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        """B×1×S×S images in [0, 1] → B×dim unit vectors."""
        return F.normalize(self.head(self.backbone(x).mean(dim=(2, 3))), dim=1)


class C2LModel(nn.Module):
    """Query encoder, momentum key encoder and the queue of past keys."""

    queue: Tensor
    queue_ptr: Tensor

    def __init__(self, backbone: str, dim: int, queue: int) -> None:
        super().__init__()
        self.encoder_q = ContrastiveEncoder(backbone, dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.encoder_k.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        """θ_k ← m·θ_k + (1 − m)·θ_q for every parameter (BN statistics stay the key's own)."""
        for p_k, p_q in zip(self.encoder_k.parameters(), self.encoder_q.parameters(), strict=True):
            p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` over the oldest queue rows, wrapping around the end."""
        size = self.queue.shape[0]
        keys = keys[-size:]
        rows = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[rows] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + len(keys)) % size)

    def forward(
        self,
        view_q: Tensor,
        view_k: Tensor,
        *,
        lam: float | None = None,
        perm: Tensor | None = None,
        temperature: float = 0.2,
        feature_mixup: bool = True,
        bn_groups: int = 1,
        key_order: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Loss terms of one batch and its keys (to enqueue after the step).

        ``lam``/``perm`` = ``None`` computes the MoCo term only. ``bn_groups`` and
        ``key_order`` (a permutation of the batch) give the shuffled batch normalisation of
        the module docstring.
        """
        q = grouped_forward(self.encoder_q, view_q, bn_groups)
        with torch.no_grad():
            k = grouped_forward(self.encoder_k, view_k, bn_groups, key_order)
        q_mix = None
        if lam is not None and perm is not None:
            mixed = lam * view_q + (1.0 - lam) * view_q[perm]
            q_mix = grouped_forward(self.encoder_q, mixed, bn_groups)
        parts = c2l_loss(
            q,
            k,
            self.queue,
            q_mix=q_mix,
            perm=perm,
            lam=1.0 if lam is None else lam,
            temperature=temperature,
            feature_mixup=feature_mixup,
        )
        return parts, k


def draw_mixup(config: C2LConfig, batch_size: int) -> tuple[float | None, Tensor | None]:
    """λ ~ Beta(α, α) and a permutation π of the batch from torch's global RNG (``None`` without
    mixup); the engine seeds that RNG per epoch, so a resumed run draws the same values."""
    if config.mixup_alpha <= 0:
        return None, None
    beta = torch.distributions.Beta(config.mixup_alpha, config.mixup_alpha)
    return float(beta.sample()), torch.randperm(batch_size)


# ---- the pretext check ----------------------------------------------------------------------

PRETEXT_IMAGES = 256


def pretext_views(dataset: UnlabeledImages, n: int, seed: int) -> tuple[Tensor, Tensor] | None:
    """Two fixed augmented views of up to ``n`` seeded images of ``dataset`` (``None`` with
    fewer than 2 readable ones); the global RNG is left as it was."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(dataset), min(n, len(dataset)), replace=False))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        batch = collate_views([dataset[int(i)] for i in rows])
    if batch["query"] is None or len(batch["query"]) < 2:
        return None
    return batch["query"], batch["key"]


@torch.no_grad()
def instance_top1(model: C2LModel, views: tuple[Tensor, Tensor], batch_size: int = 128) -> float:
    """Share of images whose own key is the nearest of all the images' keys to their query
    (both encoders in eval mode): the pretext task itself, apart from the queue and from
    batch statistics. Chance is 1 / number of images."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        q = torch.cat([model.encoder_q(x.to(device)) for x in views[0].split(batch_size)])
        k = torch.cat([model.encoder_k(x.to(device)) for x in views[1].split(batch_size)])
    finally:
        model.train(was_training)
    hits = (q @ k.T).argmax(dim=1) == torch.arange(len(q), device=device)
    return float(hits.float().mean())


# ---- export ---------------------------------------------------------------------------------


def torchvision_key_map(name: str) -> dict[str, str]:
    """Map state-dict keys of ``create_backbone(name, feature_stage=4).module`` to the keys of
    the full network (``conv1.weight``, ``layer1.0.bn1.running_mean``, …).

    Found by module identity on a freshly built network cut the same way, so it
    holds for every registered architecture.
    """
    recipe = BACKBONES.get(name)
    full = recipe.build()
    body, _, _ = recipe.cut(full, 4)
    wrapped = GreyInputAdapter(body)
    owner = {id(module): path for path, module in full.named_modules()}
    mapping: dict[str, str] = {}
    for path, module in wrapped.named_modules():
        if id(module) not in owner:
            continue
        tensors = chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False))
        for local, _ in tensors:
            full_path = owner[id(module)]
            mapping[f"{path}.{local}" if path else local] = (
                f"{full_path}.{local}" if full_path else local
            )
    return mapping


def backbone_state_dict(backbone: nn.Module, name: str) -> dict[str, Tensor]:
    """The trained stage-4 backbone as a state dict of the full torchvision network
    (classifier head excluded), ready for :func:`cxrhash.models.backbones.load_backbone_weights`.
    """
    mapping = torchvision_key_map(name)
    state = backbone.state_dict()
    return {mapping[k]: v.detach().cpu().clone() for k, v in state.items() if k in mapping}


# ---- the run --------------------------------------------------------------------------------


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
    resumable: tuple[str, ...] = (*_RESUMABLE_CHANGES, "data")

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
        floats = {name: float(value.detach()) for name, value in parts.items()}
        return StepOutput(parts["total"], floats, len(view_q))

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
