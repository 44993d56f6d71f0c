"""An orthogonal rotation of the hash layer's outputs, fitted once training has ended.

The code is sign((f − μ)·R). While training, μ = 0 and R = I, so the output is f itself.
When training ends, a method that asks for it (attention-fusion's ``itq`` parameter) fits
μ (the training films' mean output) and R (ITQ's rotation, Gong & Lazebnik, CVPR 2011) on
the training films (:mod:`cxrhash.training.code_rotation`), and the best checkpoint keeps
them as buffers, so every consumer of the model (evaluation, index, search) gets the
rotated codes without knowing about it.

Why: the k learned units are correlated and unbalanced (some are one-signed over
almost every film), so sign(f) wastes bits and ties films that f tells apart. Centring
and rotating keep the pair geometry of the centred outputs (an orthogonal R preserves
their inner products) and choose the axes that lose the least to the sign
(``docs/design.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class CodeRotation(nn.Module):
    """f ↦ (f − μ)·R with buffers μ (k) and R (k×k); the identity until :meth:`set` is called."""

    mean: Tensor
    matrix: Tensor

    def __init__(self, bits: int) -> None:
        super().__init__()
        if bits < 1:
            raise ValueError(f"bits must be ≥ 1, got {bits}")
        self.register_buffer("mean", torch.zeros(bits))
        self.register_buffer("matrix", torch.eye(bits))
        self.fitted = False  # μ ≠ 0 or R ≠ I; kept in step with the buffers

    def _check_fitted(self) -> None:
        eye = torch.eye(self.matrix.shape[0], dtype=self.matrix.dtype, device=self.matrix.device)
        self.fitted = bool(self.mean.any()) or not torch.equal(self.matrix, eye)

    def set(self, mean: Tensor, matrix: Tensor) -> None:
        """Use μ = ``mean`` and R = ``matrix`` (k×k, orthogonal within 1e-4)."""
        mean = torch.as_tensor(mean, dtype=self.mean.dtype)
        matrix = torch.as_tensor(matrix, dtype=self.matrix.dtype)
        self._validate(mean, matrix)
        self.mean.copy_(mean)
        self.matrix.copy_(matrix)
        self._check_fitted()

    def _validate(self, mean: Tensor, matrix: Tensor) -> None:
        """A ``ValueError`` unless ``mean`` (k) and ``matrix`` (k×k) are finite and orthogonal."""
        k = self.mean.shape[0]
        if mean.shape != (k,) or matrix.shape != (k, k):
            raise ValueError(
                f"a rotation of {k} bits needs a mean of shape ({k},) and a {k}×{k} matrix; "
                f"got {tuple(mean.shape)} and {tuple(matrix.shape)}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(matrix).all()):
            raise ValueError("the code rotation holds non-finite values")
        gram = matrix.double().T @ matrix.double()
        if not torch.allclose(gram, torch.eye(k, dtype=gram.dtype), atol=1e-4):
            raise ValueError("the code rotation matrix is not orthogonal")

    def reset(self) -> None:
        """Back to the identity (μ = 0, R = I)."""
        self.mean.zero_()
        self.matrix.copy_(torch.eye(self.matrix.shape[0]))
        self.fitted = False

    def forward(self, f: Tensor) -> Tensor:
        """(f − μ)·R for B×k outputs ``f`` (``f`` itself, untouched, while unfitted)."""
        return (f - self.mean) @ self.matrix if self.fitted else f

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Checkpoints written before the rotation existed hold none: the identity.
        mean, matrix = state_dict.get(prefix + "mean"), state_dict.get(prefix + "matrix")
        if mean is None and matrix is None:
            state_dict[prefix + "mean"] = torch.zeros_like(self.mean)
            state_dict[prefix + "matrix"] = torch.eye(self.matrix.shape[0])
        elif isinstance(mean, Tensor) and isinstance(matrix, Tensor):
            self._validate(mean, matrix)  # a stored rotation must be one set() would accept
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._check_fitted()
