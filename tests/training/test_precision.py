"""Mixed precision on the CPU: ``--amp bf16`` runs the training step in bfloat16 autocast."""

from pathlib import Path

import pytest
import torch

from cxrhash.config import make_config
from cxrhash.training.checkpoint import load_checkpoint
from cxrhash.training.settings import EngineSettings
from cxrhash.training.trainer import TrainingError, train


def _losses(phantom_dir: Path, out: Path, amp: str) -> torch.Tensor:
    config = make_config(
        "test", data=f"phantom:{phantom_dir}", epochs=1, amp=amp, device="cpu", augment=False
    )
    train(config, out, progress=False)
    return torch.tensor(load_checkpoint(out / "last.pt")["engine"]["recent_losses"])


def test_bf16_autocast_trains_close_to_float32_but_not_equal(
    phantom_dir: Path, tmp_path: Path
) -> None:
    full = _losses(phantom_dir, tmp_path / "fp32", "off")
    half = _losses(phantom_dir, tmp_path / "bf16", "bf16")
    assert torch.isfinite(half).all() and len(half) == len(full)
    assert not torch.equal(half[0], full[0])  # bfloat16 rounding changed the first loss
    assert abs(float(half[0] / full[0]) - 1.0) < 0.05


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(TrainingError, match="amp"):
        EngineSettings(epochs=1, batch_size=2, lr=0.1, amp="fp8")
