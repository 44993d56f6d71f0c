"""Fitting a trained model's code rotation (``models.code_rotation``) on its training films."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrhash.data.dataset import CXRDataset
from cxrhash.encode import encode_dataset
from cxrhash.evaluation.shallow import itq_rotation
from cxrhash.index.codes import distinct_count, pack_codes
from cxrhash.models.hash_head import HashHead
from cxrhash.training.checkpoint import model_fingerprint
from cxrhash.training.run_folder import load_state, save_checkpoint

LOG = logging.getLogger(__name__)

#: A bit set (or clear) on more than this share of the training films counts as one-signed.
ONE_SIGNED = 0.95


def hash_head(model: nn.Module) -> HashHead:
    """The model's one ``HashHead`` (a ``TypeError`` when it has none or several)."""
    heads = [m for m in model.modules() if isinstance(m, HashHead)]
    if len(heads) != 1:
        raise TypeError(f"{type(model).__name__} has {len(heads)} hash heads; expected one")
    return heads[0]


def code_stats(codes: np.ndarray) -> dict[str, float]:
    """Bits one-signed over ``ONE_SIGNED`` of the rows and the share of distinct rows (N×k bool)."""
    ones = codes.mean(axis=0)
    distinct = distinct_count(pack_codes(codes))
    return {
        "one_signed_bits": int(((ones > ONE_SIGNED) | (ones < 1 - ONE_SIGNED)).sum()),
        "distinct_share": distinct / len(codes),
    }


def fit_code_rotation(
    model: nn.Module,
    films: CXRDataset,
    *,
    batch_size: int = 64,
    seed: int = 0,
    n_iter: int = 50,
) -> dict[str, float]:
    """Fit μ and R of the model's code rotation on ``films`` (the training films, unaugmented).

    μ is the films' mean output f; R the ITQ rotation (:func:`~cxrhash.evaluation.shallow.
    itq_rotation`) of the centred outputs, which minimises ‖sign(VR) − VR‖² over orthogonal
    R. Any earlier rotation is discarded first, so fitting again gives the same result.

    Returns:
        The films' code statistics before and after (``one_signed_bits_*``,
        ``distinct_share_*``) and the number of films used.

    Raises:
        ValueError: fewer than two readable films.
    """
    rotation = hash_head(model).rotation
    rotation.reset()
    enc = encode_dataset(model, films, batch_size=batch_size, progress=False, desc="fit rotation")
    f = enc.hashes.astype(np.float64)
    if len(f) < 2 or not np.isfinite(f).all():
        raise ValueError(
            f"fitting the code rotation needs ≥ 2 films with finite outputs; got {len(f)}"
        )
    mean = f.mean(axis=0)
    matrix = itq_rotation(f - mean, n_iter=n_iter, seed=seed)
    rotation.set(torch.from_numpy(mean).float(), torch.from_numpy(matrix).float())
    before = code_stats(f >= 0)
    after = code_stats((f - mean) @ matrix >= 0)
    return {
        "films": len(f),
        **{f"{k}_before": v for k, v in before.items()},
        **{f"{k}_after": v for k, v in after.items()},
    }


def rotate_best_checkpoint(
    run_dir: Path, model: nn.Module, films: CXRDataset, *, batch_size: int = 64, seed: int = 0
) -> dict[str, float]:
    """Fit the code rotation of the run's ``best.pt`` weights (loaded into ``model``, a
    network of the run's architecture) on ``films`` and rewrite ``best.pt`` with it (and
    its new ``model_id``); the statistics go to ``code_rotation.json``. Fitting again
    gives the same checkpoint.
    """
    best = Path(run_dir) / "best.pt"
    payload = load_state(best, "hashing")
    model.load_state_dict(payload["model"])
    stats = fit_code_rotation(model, films, batch_size=batch_size, seed=seed)
    payload["model"] = model.state_dict()
    payload["model_id"] = model_fingerprint(payload["model"], payload["config"])
    save_checkpoint(best, payload)
    (Path(run_dir) / "code_rotation.json").write_text(json.dumps(stats, indent=2))
    LOG.info("code rotation fitted on %d training films: %s", stats["films"], stats)
    return stats
