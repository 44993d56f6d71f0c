"""Checkpoints: model + optimiser state, resolved config, label names, package version."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cxrhash
from cxrhash.config import TrainConfig

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a cxrhash checkpoint."""


def model_fingerprint(model: nn.Module) -> str:
    """A short content hash of the model weights; the index stores it to refuse foreign codes."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a kill mid-save keeps the previous file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def make_payload(
    *,
    model: nn.Module,
    config: TrainConfig,
    label_names: list[str],
    pathologies: list[str],
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    best: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything needed to resume training or to encode images later."""
    return {
        "format": FORMAT_VERSION,
        "package_version": cxrhash.__version__,
        "config": asdict(config),
        "label_names": list(label_names),
        "pathologies": list(pathologies),
        "epoch": epoch,
        "model": model.state_dict(),
        "model_id": model_fingerprint(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "best": best or {},
        "history": history or [],
    }


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint, with a clear error for a missing or foreign file."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                path = path / name
                break
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is not a cxrhash checkpoint (format {FORMAT_VERSION} expected)"
        )
    payload["path"] = str(path)
    return payload


def load_model(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained model of a checkpoint (eval mode) and return it with the payload."""
    from cxrhash.methods import METHODS

    payload = load_checkpoint(path)
    config = TrainConfig.from_dict(payload["config"])
    # The weights come from the checkpoint: never fetch or load backbone weights again.
    config.backbone_weights = None
    method = METHODS.get(config.method)
    model = method.build_model(config, len(payload["label_names"]))
    model.load_state_dict(payload["model"])
    model.eval()
    return model, payload
