"""Continuation schedules: tanh(scale·h) sharpened toward sign(h) as training proceeds."""

from __future__ import annotations

import math


def staged_scale(epoch: int, epochs: int, stages: int, scale_max: float) -> float:
    """OSDH's staged scale: the run is cut into ``stages`` equal stages, α geometric from 1 to max.

    With n = min(stages, epochs), stage s = ⌊epoch·n/epochs⌋ gets
    α_s = scale_max^{s/(n−1)}: 1 in the first stage, ``scale_max`` in the
    last (the paper: 10 values "from 1 to infinity"; each stage starts from the
    previous stage's converged weights, which an uninterrupted run gives).
    """
    if epochs < 1 or stages < 1 or scale_max < 1 or not 0 <= epoch < epochs:
        raise ValueError(
            f"need 0 ≤ epoch < epochs, stages ≥ 1, scale_max ≥ 1; got epoch={epoch}, "
            f"epochs={epochs}, stages={stages}, scale_max={scale_max}"
        )
    n = min(stages, epochs)  # a run shorter than the schedule still ends at the maximum
    if n == 1:
        return 1.0
    stage = epoch * n // epochs
    return float(scale_max ** (stage / (n - 1)))


def hashnet_scale(step: int, gamma: float = 0.005, power: float = 0.5) -> float:
    """HashNet's β = (1 + γ·step)^power after ``step`` optimisation steps (Cao 2017, its code)."""
    if step < 0 or gamma < 0:
        raise ValueError(f"step and gamma must be ≥ 0, got {step}, {gamma}")
    return float(math.pow(1.0 + gamma * step, power))
