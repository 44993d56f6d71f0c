"""Fitting the code rotation after training: ITQ on the training films, written into best.pt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrhash.config import make_config
from cxrhash.data.readers import open_dataset
from cxrhash.encode import encode_dataset
from cxrhash.methods import METHODS
from cxrhash.training.checkpoint import CheckpointError, load_model, model_fingerprint
from cxrhash.training.code_rotation import code_stats, fit_code_rotation, hash_head
from cxrhash.training.run_folder import load_state, save_checkpoint
from cxrhash.training.trainer import train


def test_code_stats_counts_one_signed_bits_and_distinct_rows() -> None:
    codes = np.zeros((40, 3), dtype=bool)
    codes[:, 1] = True  # one-signed (always set)
    codes[:20, 2] = True  # balanced
    stats = code_stats(codes)
    assert stats["one_signed_bits"] == 2  # bits 0 and 1
    assert stats["distinct_share"] == pytest.approx(2 / 40)


def test_fit_centres_on_the_films_and_reduces_quantisation_loss(phantom_dir: Path) -> None:
    torch.manual_seed(0)
    cfg = make_config("test", data=f"phantom:{phantom_dir}", method="attention-fusion", bits=8)
    films = open_dataset(cfg.data, cfg.image_size)
    model = METHODS.get("attention-fusion").build_model(cfg, len(films.pathologies) + 1).eval()
    f = encode_dataset(model, films, progress=False).hashes.astype(np.float64)

    stats = fit_code_rotation(model, films, seed=3)
    rot = hash_head(model).rotation
    assert rot.fitted and stats["films"] == len(f)
    assert np.allclose(rot.mean.numpy(), f.mean(axis=0), atol=1e-5)
    v, r = f - f.mean(axis=0), rot.matrix.double().numpy()
    quant = lambda m: np.square(np.where(v @ m >= 0, 1.0, -1.0) - v @ m).sum()  # noqa: E731
    assert quant(r) < quant(np.eye(8))  # ITQ lowers ‖sign(VR) − VR‖² below R = I
    rotated = encode_dataset(model, films, progress=False).hashes
    assert np.allclose(rotated, v @ r, atol=1e-4)

    again = fit_code_rotation(model, films, seed=3)  # discards the first rotation
    assert again == stats and np.allclose(rot.matrix.numpy(), r, atol=1e-6)


@pytest.mark.parametrize("itq", [1, 0])
def test_training_writes_the_rotation_into_best_pt(
    itq: int, phantom_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config(
        "test",
        data=f"phantom:{phantom_dir}",
        method="attention-fusion",
        epochs=1,
        method_params={"itq": itq},
    )
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    model, payload = load_model(run)
    assert hash_head(model).rotation.fitted == bool(itq)
    assert (run / "code_rotation.json").exists() == bool(itq)
    assert payload["model_id"] == model_fingerprint(model.state_dict(), payload["config"])
    if itq:
        stats = json.loads((run / "code_rotation.json").read_text())
        assert stats["films"] > 0 and 0 < stats["distinct_share_after"] <= 1
        # a tampered checkpoint whose rotation is no rotation: one clear error, naming the file
        state = load_state(run / "best.pt", "hashing")
        state["model"]["head.rotation.matrix"] *= 3.0
        save_checkpoint(run / "best.pt", state)
        with pytest.raises(CheckpointError, match="best.pt.*not orthogonal"):
            load_model(run)
