"""C2L ("Comparing to Learn", Zhou et al., MICCAI 2020): contrastive pretraining of a backbone.

MoCo-style self-supervision on unlabelled radiographs, plus image and feature
mixup. The output ``backbone.pt`` holds the query backbone in torchvision's own
key names, so ``cxrhash train --backbone-weights OUT/backbone.pt`` starts from it.

Model: query encoder = backbone cut at stage 4 → global average pool → 2-layer
MLP (C → C → ``dim``) → L2 normalisation; key encoder = a momentum copy
(``θ_k ← m·θ_k + (1 − m)·θ_q`` after every optimiser step), never trained by
gradients; a queue of ``K`` past keys supplies negatives.

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
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from itertools import chain
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrhash.models.backbones import BACKBONES, GreyInputAdapter, create_backbone
from cxrhash.pretrain.unlabeled import UnlabeledImages, collate_views
from cxrhash.training.checkpoint import save_checkpoint
from cxrhash.training.trainer import seed_everything

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
SGD_MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
# Fields that may differ when a run is resumed (the rest fix the model, data or schedule).
_RESUMABLE_CHANGES = ("epochs", "num_workers")


class PretrainError(ValueError):
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
        seed: seeds initialisation, image order, augmentation and mixup.
        num_workers: DataLoader worker processes.
        max_images: use a seeded random subset of this many images.
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
    seed: int = 0
    num_workers: int = 0
    max_images: int | None = None

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
            "num_workers": self.num_workers >= 0,
            "max_images": self.max_images is None or self.max_images >= 2,
        }
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise PretrainError(
                "invalid C2L settings: " + ", ".join(bad) + " (need image_size ≥ 8, epochs ≥ 1, "
                "batch_size ≥ 2, lr > 0, dim ≥ 1, queue ≥ 1, 0 ≤ momentum < 1, temperature > 0, "
                "mixup_alpha ≥ 0, num_workers ≥ 0, max_images ≥ 2)"
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
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Loss terms of one batch and its keys (to enqueue after the step).

        ``lam``/``perm`` = ``None`` computes the MoCo term only.
        """
        q = self.encoder_q(view_q)
        with torch.no_grad():
            k = self.encoder_k(view_k)
        q_mix = None
        if lam is not None and perm is not None:
            q_mix = self.encoder_q(lam * view_q + (1.0 - lam) * view_q[perm])
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


def training_step(
    model: C2LModel,
    optimizer: torch.optim.Optimizer,
    view_q: Tensor,
    view_k: Tensor,
    config: C2LConfig,
) -> dict[str, float]:
    """One SGD step on the query encoder, then the momentum update and the enqueue.

    λ and π are drawn from torch's global RNG (seeded per epoch by the caller).

    Raises:
        PretrainError: the loss is not finite.
    """
    lam: float | None = None
    perm: Tensor | None = None
    if config.mixup_alpha > 0:
        beta = torch.distributions.Beta(config.mixup_alpha, config.mixup_alpha)
        lam = float(beta.sample())
        perm = torch.randperm(len(view_q)).to(view_q.device)
    parts, keys = model(
        view_q,
        view_k,
        lam=lam,
        perm=perm,
        temperature=config.temperature,
        feature_mixup=config.feature_mixup,
    )
    if not torch.isfinite(parts["total"]):
        raise PretrainError(f"the C2L loss became {parts['total'].item()}")
    optimizer.zero_grad(set_to_none=True)
    parts["total"].backward()
    optimizer.step()
    model.momentum_update(config.momentum)
    model.enqueue(keys)
    return {name: float(value.detach()) for name, value in parts.items()}


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Learning rate of (0-based) ``epoch``: cosine from ``base_lr`` towards 0 over ``epochs``."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * epoch / epochs))


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


def _check_resume(saved: dict[str, Any], config: C2LConfig, fingerprint: str) -> None:
    mine = asdict(config)
    diffs = [k for k in mine if k not in _RESUMABLE_CHANGES and saved["config"].get(k) != mine[k]]
    if diffs:
        raise PretrainError(
            "cannot resume: the run was started with different "
            + ", ".join(f"{k} ({saved['config'].get(k)!r} vs {mine[k]!r})" for k in diffs)
        )
    if saved.get("data_fingerprint") != fingerprint:
        raise PretrainError("cannot resume: the image list differs from the one the run started on")
    if saved["epoch"] + 1 > config.epochs:
        raise PretrainError(
            f"cannot resume: the run already did {saved['epoch'] + 1} epochs, more than "
            f"epochs={config.epochs}"
        )


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise PretrainError(f"cannot read pretraining checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("method") != "c2l":
        raise PretrainError(f"{path} is not a C2L pretraining checkpoint")
    return state


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

    Writes to ``out_dir``: ``config.json``; ``last.pt`` after every epoch (both
    encoders, queue, optimiser, epoch, config; atomic); ``backbone.pt`` (the
    query backbone as ``{"state_dict": <torchvision keys>, "arch", "method",
    "image_size", "epochs"}``: pass it as ``--backbone-weights``);
    ``history.json``; ``pretrain_curves.png``.

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
            incompatible resume, or a non-finite loss.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dataset = UnlabeledImages(
        Path(data_dir), config.image_size, max_images=config.max_images, seed=config.seed
    )
    if len(dataset) < 2:
        raise PretrainError(f"{data_dir} holds {len(dataset)} image(s); contrast needs at least 2")
    fingerprint = dataset.fingerprint()

    state: dict[str, Any] | None = None
    if resume:
        if not (out_dir / "last.pt").exists():
            raise PretrainError(f"nothing to resume: {out_dir / 'last.pt'} does not exist")
        state = _load_state(out_dir / "last.pt")
        _check_resume(state, config, fingerprint)
    elif (out_dir / "last.pt").exists():
        raise PretrainError(
            f"{out_dir} already holds a run (last.pt); pass --resume to continue it "
            "or choose another --out"
        )
    (out_dir / "config.json").write_text(
        json.dumps({**asdict(config), "data": str(data_dir)}, indent=2)
    )

    seed_everything(config.seed)
    model = C2LModel(config.backbone, config.dim, config.queue).to(dev)
    optimizer = torch.optim.SGD(
        model.encoder_q.parameters(), lr=config.lr, momentum=SGD_MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    history: list[dict[str, Any]] = []
    skipped: set[str] = set()
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch = state["history"], state["epoch"] + 1
        skipped = set(state["skipped_files"])
        LOG.info("resuming %s at epoch %d", out_dir, start_epoch + 1)

    t_start = time.perf_counter()
    images_seen = 0
    for epoch in range(start_epoch, config.epochs):
        # Per-epoch seeding makes a resumed run identical to an uninterrupted one.
        seed_everything(config.seed * 1000 + epoch)
        gen = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=True,
            generator=gen,
            num_workers=config.num_workers,
            collate_fn=collate_views,
            drop_last=len(dataset) > config.batch_size,
        )
        lr = cosine_lr(config.lr, epoch, config.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        sums: dict[str, float] = {}
        n_batches = n_img = 0
        t0 = time.perf_counter()
        bar = tqdm(
            loader, desc=f"c2l {epoch + 1}/{config.epochs}", disable=not progress, leave=False
        )
        for batch in bar:
            skipped.update(s.path for s in batch["skipped"] if s.path)
            if batch["query"] is None or len(batch["idx"]) < 2:
                continue
            parts = training_step(
                model, optimizer, batch["query"].to(dev), batch["key"].to(dev), config
            )
            n_batches += 1
            n_img += len(batch["idx"])
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value
            rate = n_img / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{parts['total']:.3f}", img_s=f"{rate:.1f}")
        if n_batches == 0:
            raise PretrainError(f"epoch {epoch + 1}: no batch with two readable images")
        seconds = time.perf_counter() - t0
        images_seen += n_img
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            **{f"loss_{name}": value / n_batches for name, value in sums.items()},
            "images_per_second": n_img / max(seconds, 1e-9),
            "seconds": seconds,
        }
        history.append(record)
        payload = {
            "format": FORMAT_VERSION,
            "method": "c2l",
            "config": asdict(config),
            "data_fingerprint": fingerprint,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "skipped_files": sorted(skipped),
        }
        save_checkpoint(out_dir / "last.pt", payload)
        (out_dir / "history.json").write_text(json.dumps(history, indent=2))
        LOG.info("c2l epoch %d: loss %.4f", epoch + 1, record["loss_total"])
        if progress:
            tqdm.write(
                f"c2l epoch {epoch + 1}/{config.epochs}  loss {record['loss_total']:.4f}  "
                f"{record['images_per_second']:.1f} img/s"
            )

    backbone_path = out_dir / "backbone.pt"
    save_checkpoint(
        backbone_path,
        {
            "state_dict": backbone_state_dict(model.encoder_q.backbone, config.backbone),
            "arch": config.backbone,
            "method": "c2l",
            "image_size": config.image_size,
            "epochs": config.epochs,
        },
    )
    _plot_history(history, out_dir / "pretrain_curves.png")
    if skipped:
        LOG.warning("%d unreadable images were skipped", len(skipped))
    seconds = time.perf_counter() - t_start
    return {
        "out_dir": str(out_dir),
        "backbone_weights": str(backbone_path),
        "epochs_run": config.epochs - start_epoch,
        "images": len(dataset),
        "skipped_files": len(skipped),
        "final_loss": history[-1]["loss_total"] if history else float("nan"),
        "images_per_second": images_seen / max(seconds, 1e-9),
        "seconds": seconds,
    }


def _plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Loss terms per epoch, as a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key in sorted(k for k in history[0] if k.startswith("loss_")):
        ax.plot(epochs, [h.get(key, float("nan")) for h in history], marker="o", label=key[5:])
    ax.set_xlabel("epoch")
    ax.set_ylabel("C2L training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
