"""The code rotation: the identity until fitted, (f − μ)·R after, kept in the state dict."""

from __future__ import annotations

import pytest
import torch

from cxrhash.models.code_rotation import CodeRotation
from cxrhash.models.hash_head import HashHead


def _rotation(k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(k, k, generator=g))
    return torch.randn(k, generator=g), q


def test_unfitted_rotation_returns_its_input_untouched() -> None:
    rot = CodeRotation(4)
    f = torch.tensor([[float("nan"), 1.0, -2.0, 0.5]])
    assert rot(f) is f and not rot.fitted  # a NaN in one unit does not spread to the others


def test_fitted_rotation_centres_then_rotates() -> None:
    rot = CodeRotation(6)
    mean, matrix = _rotation(6)
    rot.set(mean, matrix)
    f = torch.randn(5, 6)
    assert rot.fitted
    assert torch.allclose(rot(f), (f - mean) @ matrix, atol=1e-6)
    # an orthogonal R keeps the inner products of the centred outputs
    c = f - mean
    assert torch.allclose(rot(f) @ rot(f).T, c @ c.T, atol=1e-4)
    rot.reset()
    assert not rot.fitted and torch.equal(rot(f), f)


@pytest.mark.parametrize(
    ("mean", "matrix", "message"),
    [
        (torch.zeros(3), torch.eye(4), "shape"),
        (torch.zeros(4), 2 * torch.eye(4), "not orthogonal"),
        (torch.full((4,), float("inf")), torch.eye(4), "non-finite"),
    ],
)
def test_bad_rotations_are_refused(mean: torch.Tensor, matrix: torch.Tensor, message: str) -> None:
    rot = CodeRotation(4)
    with pytest.raises(ValueError, match=message):
        rot.set(mean, matrix)
    assert not rot.fitted


def test_the_rotation_travels_in_the_state_dict_and_old_heads_load_as_identity() -> None:
    torch.manual_seed(0)
    head = HashHead(10, 6, 3, "tanh")
    head.rotation.set(*_rotation(6))
    fresh = HashHead(10, 6, 3, "tanh")
    fresh.load_state_dict(head.state_dict())
    x = torch.randn(4, 10)
    assert fresh.rotation.fitted
    assert torch.allclose(fresh(x)[0], head(x)[0])
    # a checkpoint written before the rotation existed: strict load, identity rotation
    old = {k: v for k, v in head.state_dict().items() if not k.startswith("rotation.")}
    legacy = HashHead(10, 6, 3, "tanh")
    legacy.rotation.set(*_rotation(6, seed=1))
    legacy.load_state_dict(old)
    assert not legacy.rotation.fitted
    assert torch.allclose(legacy(x)[0], head.hash_layer(x))


def test_the_classifier_reads_the_unrotated_outputs() -> None:
    torch.manual_seed(0)
    head = HashHead(10, 6, 3, "tanh")
    x = torch.randn(4, 10)
    f, logits = head(x)
    head.rotation.set(*_rotation(6))
    rotated, logits_after = head(x)
    assert torch.allclose(logits, logits_after)
    assert not torch.allclose(f, rotated)


@pytest.mark.parametrize(
    ("mean", "matrix", "message"),
    [
        (torch.zeros(6), 2 * torch.eye(6), "not orthogonal"),
        (torch.full((6,), float("nan")), torch.eye(6), "non-finite"),
    ],
)
def test_a_stored_rotation_set_would_refuse_does_not_load(
    mean: torch.Tensor, matrix: torch.Tensor, message: str
) -> None:
    state = HashHead(10, 6, 3, "tanh").state_dict()
    state["rotation.mean"], state["rotation.matrix"] = mean, matrix
    with pytest.raises(ValueError, match=message):
        HashHead(10, 6, 3, "tanh").load_state_dict(state)
