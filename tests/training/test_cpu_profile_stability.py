"""The `cpu` profile's recipe at 64 bits stays finite and learns for as long as it used to diverge.

Issue #9's report: `cxrhash train --profile cpu --bits 64` (attention-fusion,
ResNet-18, 128 px, SGD lr 0.01, momentum 0.9, batch 32) went from loss 26 to
1.3e23 within the first 54 steps on a lesion dataset, then NaN. This runs the
same optimiser settings for 54 steps (two epochs of 27) on multi-finding
phantom films at 128 px with the default hash layer, and asserts a finite loss
that goes down without a single rollback of the divergence guard.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cxrhash.config import PROFILES, make_config
from cxrhash.data.phantom import write_phantom_dataset
from cxrhash.training.trainer import train

STEPS_THAT_DIVERGED = 54


@pytest.mark.slow
def test_cpu_profile_at_64_bits_trains_54_steps_finite_and_falling(tmp_path: Path) -> None:
    cpu = PROFILES["cpu"]
    assert (cpu["backbone"], cpu["image_size"], cpu["batch_size"]) == ("resnet18", 128, 32)
    # 27 full batches of 32 per epoch from the 60 % training part
    data = write_phantom_dataset(tmp_path / "data", 1460, 128, seed=11)
    # The reported setting: the paper's loss and SGD at 0.01 (the `cpu` profile has since
    # moved to Adam, and the default loss ramps its code terms in, so its total rises).
    config = make_config(
        "cpu",
        data=f"phantom:{data}",
        bits=64,
        epochs=2,
        val_database_max=200,
        seed=0,
        optimizer="sgd",
        lr=0.01,
        method_params={"paper": 1},
    )
    assert (config.optimizer, config.lr, config.momentum) == ("sgd", 0.01, 0.9)
    assert config.grad_clip is None  # no clipping: the layer itself must be stable
    result = train(config, tmp_path / "run", progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert sum(h["steps"] for h in history) >= STEPS_THAT_DIVERGED
    assert result.rollbacks == []
    losses = [h["loss_total"] for h in history]
    assert all(math.isfinite(x) for x in losses)
    assert losses[1] < losses[0], losses
