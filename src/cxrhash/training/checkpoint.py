"""Hashing checkpoints: reading them safely and rebuilding the trained model.

The engine (:mod:`cxrhash.training.engine`) writes them; they hold the resolved
config, label names, package version, model and optimiser state, and are read
with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.training.engine import TrainingError, load_state


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a cxrhash checkpoint."""


def model_fingerprint(model: nn.Module) -> str:
    """A short content hash of the model weights; the index stores it to refuse foreign codes."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a hashing checkpoint (a run folder means its ``best.pt``, else ``last.pt``).

    Raises:
        CheckpointError: missing, unreadable, or not a cxrhash hashing checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                path = path / name
                break
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = load_state(path, "hashing")
    except TrainingError as exc:
        raise CheckpointError(str(exc)) from exc
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
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, ValueError) as exc:  # foreign keys or shapes; an invalid rotation
        raise CheckpointError(
            f"{payload['path']}: its weights do not fit its {config.method} model ({exc})"
        ) from exc
    model.eval()
    return model, payload
