"""A bank of the relaxed codes of every training image, for losses that pair the batch with
the whole training set (DPSH, Li et al. 2016: U = [u_1 … u_n], updated with each batch)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class CodeBank:
    """The latest relaxed code u_j (k floats) and the relevance labels of each training image.

    Rows of images not seen yet are 0, so they add a constant (log 2) and no
    gradient to a pairwise likelihood. ``update`` writes the batch's detached
    outputs after an accepted optimiser step; ``state_dict``/``load_state_dict``
    let the engine checkpoint and roll it back with the model.
    """

    def __init__(self, labels: np.ndarray, bits: int) -> None:
        """``labels``: N×C relevance labels (1 / 0) of the training set, in its order."""
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2 or bits < 1:
            raise ValueError(f"need N×C labels and bits ≥ 1, got {labels.shape} and {bits}")
        self.labels = torch.from_numpy(np.nan_to_num(labels, nan=0.0))
        self.codes = torch.zeros(len(labels), bits)

    def __len__(self) -> int:
        return len(self.codes)

    @torch.no_grad()
    def update(self, index: Tensor, u: Tensor) -> None:
        """Write the relaxed codes ``u`` (B×k) of training images ``index`` (B)."""
        if u.shape != (len(index), self.codes.shape[1]):
            raise ValueError(
                f"bank update needs {len(index)}×{self.codes.shape[1]} codes, got {tuple(u.shape)}"
            )
        self.codes[index.cpu()] = u.detach().float().cpu()

    def state_dict(self) -> dict[str, Tensor]:
        return {"codes": self.codes.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["codes"].shape != self.codes.shape:
            raise ValueError(
                f"saved code bank is {tuple(state['codes'].shape)}, expected "
                f"{tuple(self.codes.shape)} (a different training set?)"
            )
        self.codes.copy_(state["codes"])
