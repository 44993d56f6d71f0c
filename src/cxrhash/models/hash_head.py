"""The hash layer and hash head every hashing network shares (one implementation).

``HashLayer`` is the k-unit linear layer that produces the relaxed codes f, with
one of ``HASH_ACTIVATIONS`` applied to its pre-activation h = W·x + b:

* ``identity`` — f = h (DSH; the attention-fusion paper's layer). Unbounded:
  L_c's D² and L_r = ‖|f|−1‖₁ grow with the output scale, so a large step can
  feed on itself and diverge (issue #9).
* ``tanh`` — f = tanh(β·h) with the continuation scale β (OSDH's α, HashNet's
  β) that methods raise through ``set_scale``; β = 1 unless a method sets it.
* ``tanh-continuation`` — the same layer; the marker tells a method whose own
  paper has no schedule (attention-fusion) to raise β by HashNet's
  (1 + γ·step)^0.5 (``methods/attention_fusion.py``).
* ``normalize`` — f = √k·h/‖h‖₂: every output lies on the sphere through all
  2^k codes in {−1, +1}^k, so D ≤ 2√k, L_c ≤ 2k and L_r ≤ k·(√k−1) whatever the
  weights, and f is invariant to the scale of h (a growing h only shrinks its
  own gradient).
* ``ball`` — f = h·min(1, √k/‖h‖₂): the identity inside the ball of radius √k
  and the projection onto that sphere outside it (the max-norm constraint of
  embedding learning, e.g. TransE's ‖e‖ ≤ 1, Bordes et al. 2013), so the same
  bounds as ``normalize`` hold while outputs inside the ball pass unchanged.
* ``ball2`` — the same with radius 2√k: D ≤ 4√k, L_c ≤ 8k, L_r ≤ k(2√k − 1).
  Trained identity layers settle at ‖f‖ ≈ 1.0–1.25·√k (L_r pulls every |f_i|
  toward 1), so this ball leaves the identity layer's working regime alone and
  only acts on the run-away outputs of a diverging step.
* ``batchnorm`` — f = BN(h) without affine parameters: each unit standardised
  over the batch (running statistics at evaluation), so its scale is ~1 and
  each bit is balanced around 0 (OrthoHash, Hoe et al., NeurIPS 2021, puts a
  BatchNorm on the hash layer for code balance).

Codes are ``sign(f)`` (``models.output.binarize``) for every activation; for
``normalize``, ``ball``, ``ball2`` and ``tanh`` that equals sign(h), for ``batchnorm`` it is
sign(h − running mean).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from cxrhash.models.code_rotation import CodeRotation

HASH_ACTIVATIONS = (
    "identity",
    "tanh",
    "tanh-continuation",
    "normalize",
    "ball",
    "ball2",
    "batchnorm",
)
# Radius of the ``ball`` activations in units of √k (the norm of every ±1 code).
BALL_RADIUS = {"ball": 1.0, "ball2": 2.0}
# Activations whose relaxed codes are tanh(β·h) with a settable continuation scale β.
SCALED_ACTIVATIONS = ("tanh", "tanh-continuation")
_NORM_EPS = 1e-6


def check_activation(activation: str) -> str:
    """``activation`` if it is one of ``HASH_ACTIVATIONS``, else a ``ValueError`` naming them."""
    if activation not in HASH_ACTIVATIONS:
        raise ValueError(
            f"hash activation must be one of {', '.join(HASH_ACTIVATIONS)}; got {activation!r}"
        )
    return activation


def straight_through_sign(f: Tensor) -> Tensor:
    """sign(f) (0 → +1, as ``binarize``) in the forward pass, the identity in the backward pass.

    The straight-through estimator of Greedy Hash (Su et al., NeurIPS 2018):
    a loss computed on the returned tensor sees the binary code, and its
    gradient is passed to f unchanged.
    """
    b = torch.where(f >= 0, torch.ones_like(f), -torch.ones_like(f))
    return f + (b - f).detach()


class HashLayer(nn.Linear):
    """k-unit linear hash layer with its activation (see the module docstring).

    A subclass of ``nn.Linear`` so ``weight``/``bias`` keep their names (the
    k×D ``weight`` is what DH/DRH regularise). ``scale`` (a buffer, saved with
    the model) is the continuation scale β of the tanh activations; the other
    activations ignore it. ``batchnorm`` adds a ``norm`` submodule
    (``BatchNorm1d(k, affine=False)``), which needs ≥ 2 samples per training batch.
    """

    scale: Tensor

    def __init__(self, in_dim: int, bits: int, activation: str = "identity") -> None:
        if in_dim < 1 or bits < 1:
            raise ValueError(f"in_dim and bits must be ≥ 1, got {in_dim}, {bits}")
        super().__init__(in_dim, bits)
        self.activation = check_activation(activation)
        self.register_buffer("scale", torch.tensor(1.0))
        self.norm = nn.BatchNorm1d(bits, affine=False) if activation == "batchnorm" else None

    def set_scale(self, value: float) -> None:
        """Set the continuation scale β of tanh(β·h)."""
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"continuation scale must be a finite number > 0, got {value}")
        self.scale.fill_(float(value))

    def forward(self, x: Tensor) -> Tensor:
        """Relaxed codes f (B×k) of the B×D features ``x``."""
        h = super().forward(x)
        if self.activation in SCALED_ACTIVATIONS:
            return torch.tanh(self.scale * h)
        if self.activation == "normalize":
            norm = h.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
            return h * (math.sqrt(self.out_features) / norm)
        if self.activation in BALL_RADIUS:
            radius = BALL_RADIUS[self.activation] * math.sqrt(self.out_features)
            norm = h.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
            return h * (radius / norm).clamp(max=1.0)
        if self.norm is not None:
            return self.norm(h)
        return h

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"


class HashHead(nn.Module):
    """features (B×D) → ``HashLayer`` (k units + activation) → classifier (k → C).

    The relaxed codes it returns pass through ``rotation`` (a ``CodeRotation``: the
    identity while training; fitted after training by methods that ask for it).

    Used by every hashing network (``AttentionFusionNet``, ``DeepHashNet``,
    ``SemanticAttentionNet``, ``SaliencyFusionNet``) through the shared head of
    ``models.hash_model.HashModel``. ``scale`` is the
    continuation parameter methods raise epoch by epoch through ``set_scale``.
    Binary codes are sign(f) whatever the activation and scale.
    """

    def __init__(
        self,
        in_dim: int,
        bits: int,
        num_classes: int,
        activation: str = "identity",
        classify_codes: bool = False,
    ):
        super().__init__()
        if bits < 1 or num_classes < 1:
            raise ValueError(f"bits and num_classes must be ≥ 1, got {bits}, {num_classes}")
        self.hash_layer = HashLayer(in_dim, bits, activation)
        self.classifier = nn.Linear(bits, num_classes)
        self.classify_codes = classify_codes
        self.rotation = CodeRotation(bits)

    @property
    def activation(self) -> str:
        """The hash layer's activation (one of ``HASH_ACTIVATIONS``)."""
        return self.hash_layer.activation

    @property
    def scale(self) -> Tensor:
        """The continuation scale β (a 0-d buffer of the hash layer)."""
        return self.hash_layer.scale

    def set_scale(self, value: float) -> None:
        """Set the continuation scale of tanh(scale·h)."""
        self.hash_layer.set_scale(value)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(relaxed codes (f − μ)·R, classifier logits on f — or on sign(f) with
        ``classify_codes``); μ = 0 and R = I unless ``rotation`` was fitted.

        With ``classify_codes`` the classifier reads the binary code the index
        will store, sign(f), and its gradient reaches f straight through
        (``straight_through_sign``), so the findings must be decodable from the
        code itself, not from the magnitudes of f.
        """
        f = self.hash_layer(features)
        logits = self.classifier(straight_through_sign(f) if self.classify_codes else f)
        return self.rotation(f), logits

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Checkpoints written before the hash layer owned the scale kept it as ``scale``.
        old, new = prefix + "scale", prefix + "hash_layer.scale"
        if old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
