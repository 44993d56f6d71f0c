"""Hashing checkpoints: reading them safely and rebuilding the trained model.

The engine writes them (:mod:`cxrhash.training.run_folder`); they hold the resolved
config, label names, package version, model and optimiser state, and are read
with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from cxrhash.config import TrainConfig
from cxrhash.data.images import PREPROCESSING
from cxrhash.training.errors import TrainingError
from cxrhash.training.run_folder import load_state


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a cxrhash checkpoint."""


#: Config fields that change the codes a set of weights makes (network, code length,
#: input size); training-only fields (optimiser, epochs, seed, data) are left out.
ENCODING_FIELDS = (
    "method",
    "backbone",
    "feature_stage",
    "variant",
    "bits",
    "hash_activation",
    "image_size",
    "no_finding_class",
    "method_params",
)


def model_fingerprint(state: Mapping[str, Tensor], config: Mapping[str, Any]) -> str:
    """A short content hash of everything that decides a film's code.

    The weights (``state``, a state dict: it includes the input normalisation's
    mean/std buffers and any code rotation), the config's :data:`ENCODING_FIELDS`
    (hash layer, bits, image size, …) and the image preprocessing
    (:data:`cxrhash.data.images.PREPROCESSING`: decoding, resize, input channels).
    An index stores it to refuse codes from any other model or preprocessing.
    """
    recipe = {f: config.get(f) for f in ENCODING_FIELDS}
    recipe["preprocessing"] = PREPROCESSING
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode())
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
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
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{path} is not a cxrhash hashing checkpoint (no config or weights)")
    try:
        # Recomputed, never read from the file: an edited config must not keep the old id.
        payload["model_id"] = model_fingerprint(payload["model"], payload["config"])
    except (AttributeError, TypeError, RuntimeError) as exc:  # weights that are not tensors
        raise CheckpointError(f"{path} is not a cxrhash hashing checkpoint ({exc})") from exc
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
