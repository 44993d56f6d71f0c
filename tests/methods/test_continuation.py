"""Continuation schedules (OSDH staged α, HashNet β) and their effect through training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cxrhash.config import make_config
from cxrhash.methods.continuation import hashnet_scale, staged_scale
from cxrhash.training.checkpoint import load_model
from cxrhash.training.trainer import train


def test_staged_scale_runs_from_one_to_max_in_stages() -> None:
    values = [staged_scale(e, 20, 10, 100.0) for e in range(20)]
    assert values[0] == 1.0 and values[-1] == pytest.approx(100.0)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert len(set(values)) == 10  # two epochs per stage
    assert values[0] == values[1] and values[2] > values[1]
    # fewer epochs than stages: stages are skipped, the last epoch still reaches the maximum
    short = [staged_scale(e, 4, 10, 100.0) for e in range(4)]
    assert short[0] == 1.0 and short[-1] == pytest.approx(100.0) and len(set(short)) == 4


def test_hashnet_scale_formula() -> None:
    assert hashnet_scale(0) == 1.0
    assert hashnet_scale(200, 0.005, 0.5) == pytest.approx(2.0**0.5)


def test_bad_schedule_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="epoch"):
        staged_scale(5, 5, 10, 100.0)


def test_osdh_training_sharpens_outputs_toward_sign(phantom_dir: Path, tmp_path: Path) -> None:
    """After the last stage the scale is α_max, so relaxed outputs sit near ±1 on phantom films."""
    cfg = make_config(
        "test",
        data=f"phantom:{phantom_dir}",
        method="osdh",
        epochs=3,
        method_params={"stages": 3, "alpha_max": 50.0},
    )
    train(cfg, tmp_path / "run", progress=False)
    model, _ = load_model(tmp_path / "run" / "last.pt")
    head = model.head
    assert float(head.scale) == pytest.approx(50.0)
    x = torch.rand(6, 1, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        sharp = model(x).hash.abs().mean()
        head.set_scale(1.0)
        soft = model(x).hash.abs().mean()
        codes_soft = model.encode(x)
        head.set_scale(50.0)
        codes_sharp = model.encode(x)
    assert sharp > soft and sharp > 0.9
    assert torch.equal(codes_soft, codes_sharp)  # sign(tanh(αh)) does not depend on α
