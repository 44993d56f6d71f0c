"""The curves PNG of a run: loss terms, learning rate (rollbacks marked), validation score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_history(history: list[dict[str, Any]], path: Path, score_key: str | None) -> None:
    """Loss terms, learning rate and (if any) the validation score per epoch, as a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    panels = 3 if score_key else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.2))
    for key in sorted(k for k in history[0] if k.startswith("loss_")):
        axes[0].plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key[5:])
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize=8)
    axes[1].plot(epochs, [h["lr"] for h in history], marker="o", color="C7")
    rolled = [h["epoch"] for h in history if h.get("rollbacks")]
    for e in rolled:
        axes[1].axvline(e, color="C3", linestyle=":", linewidth=1)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("learning rate" + (" (red: rollback)" if rolled else ""))
    if score_key:
        axes[2].plot(epochs, [h.get(score_key, np.nan) for h in history], marker="o", color="C3")
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel(f"validation {score_key}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
