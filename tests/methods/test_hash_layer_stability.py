"""Issue #9: the identity hash layer diverges under SPEC §1's loss; ``normalize`` does not.

Reproduction (``docs/hash_layer.md``, setting ``provoked-64px-lr0.02``): attention-fusion,
ResNet-18 at 64 px, 64 bits, margin √k, SGD momentum 0.9, weight decay 1e-4, batch
32 (the ``cpu-fast`` profile) with the learning rate doubled to 0.02. On phantom3k
the identity layer's loss passes 100× its first value within 5–6 steps for seeds
0–2; here the same on a fixed set of generated phantom batches. The bounded layer
runs the same batches with a finite, falling loss.
"""

import math

import numpy as np
import pytest
import torch

from cxrhash.config import make_config
from cxrhash.data.labels import with_no_finding
from cxrhash.data.phantom import generate_phantom
from cxrhash.methods import METHODS
from cxrhash.training.settings import build_optimizer
from cxrhash.training.trainer import engine_settings

STEPS = 40
LR = 0.02
BATCHES = 6


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    samples = list(generate_phantom(32 * BATCHES, 64, seed=3))
    imgs = torch.from_numpy(np.stack([s.image for s in samples])).float().div(255).unsqueeze(1)
    labs = with_no_finding(torch.from_numpy(np.stack([s.labels for s in samples])), True)
    return [(imgs[i : i + 32], labs[i : i + 32]) for i in range(0, len(samples), 32)]


def _run(activation: str, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """Per-step losses until STEPS or the first non-finite / > 100× first loss."""
    cfg = make_config("cpu-fast", bits=64, seed=0, lr=LR, hash_activation=activation)
    method = METHODS.get("attention-fusion")
    torch.manual_seed(0)
    model = method.build_model(cfg, batches[0][1].shape[1])
    opt = build_optimizer(engine_settings(cfg), model)
    model.train()
    losses: list[float] = []
    for step in range(STEPS):
        x, y = batches[step % len(batches)]
        loss, _ = method.loss(model(x), y, cfg)
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]) or losses[-1] > 100 * losses[0]:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return losses


@pytest.mark.slow
def test_identity_layer_explodes_and_the_normalized_layer_stays_finite():
    batches = _batches()
    identity = _run("identity", batches)
    assert len(identity) < STEPS, f"identity did not diverge: {identity}"
    assert not math.isfinite(identity[-1]) or identity[-1] > 100 * identity[0]

    bounded = _run("normalize", batches)
    assert len(bounded) == STEPS and all(math.isfinite(v) for v in bounded)
    assert max(bounded) < 3 * bounded[0]
    first, last = np.mean(bounded[: len(batches)]), np.mean(bounded[-len(batches) :])
    assert last < 0.8 * first, (first, last)  # same batches, one pass each: the loss falls
