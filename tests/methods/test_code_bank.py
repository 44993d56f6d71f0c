"""DPSH's code bank: the batch paired with every training image, checkpointed with the run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrhash.config import make_config
from cxrhash.losses.pairs import cross_similarity
from cxrhash.losses.pairwise_likelihood import bank_pairwise_likelihood_loss
from cxrhash.methods import METHODS
from cxrhash.methods.base import LossContext
from cxrhash.methods.code_bank import CodeBank
from cxrhash.models.output import HashOutput
from cxrhash.training.run_folder import load_state
from cxrhash.training.trainer import train


def test_bank_likelihood_equals_the_sum_over_batch_and_training_set() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bank = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y_batch = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=torch.float64)
    y_bank = torch.tensor(
        [[1, 1, 0], [0, 0, 1], [0, 0, 0], [float("nan"), 1, 0], [1, 0, 0]], dtype=torch.float64
    )
    sim = cross_similarity(y_batch, y_bank)
    expected = 0.0
    for i in range(3):
        for j in range(5):
            s = float(any(y_batch[i, c] > 0 and y_bank[j, c] > 0 for c in range(3)))
            assert float(sim[i, j]) == s
            omega = 0.5 * float(u[i].detach() @ bank[j])
            expected += -(s * omega - math.log1p(math.exp(omega)))
    loss = bank_pairwise_likelihood_loss(u, bank, sim)
    assert float(loss.detach()) == pytest.approx(expected / 15, rel=1e-12)
    loss.backward()
    assert u.grad is not None and bank.grad is None  # no gradient into the bank


def test_dpsh_default_pairs_with_the_bank_and_bank0_with_the_batch() -> None:
    torch.manual_seed(0)
    u = torch.randn(4, 8)
    out = HashOutput(hash=u, logits=torch.zeros(4, 2), features=torch.zeros(4, 3))
    labels = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 0]])
    bank = CodeBank(np.array([[1, 0], [0, 1], [0, 0]], np.float32), 8)
    bank.update(torch.tensor([0, 1, 2]), torch.randn(3, 8))
    config = make_config("test", method="dpsh", bits=8)
    dpsh = METHODS.get("dpsh")
    with pytest.raises(ValueError, match="code bank"):
        dpsh.loss(out, labels, config)
    with_bank, parts = dpsh.loss(out, labels, config, LossContext(torch.arange(4), bank))
    sim = cross_similarity(labels, bank.labels)
    q = (torch.sign(u) - u).pow(2).sum(1).mean()
    expected = bank_pairwise_likelihood_loss(u, bank.codes, sim) + 0.1 * q
    assert float(with_bank) == pytest.approx(float(expected), rel=1e-6)
    assert parts["likelihood"] == pytest.approx(float(expected - 0.1 * q), rel=1e-6)
    config.method_params = {"bank": 0}
    in_batch, _ = dpsh.loss(out, labels, config)
    assert float(in_batch) != pytest.approx(float(with_bank))


def test_bank_update_and_state_round_trip() -> None:
    bank = CodeBank(np.zeros((4, 2), np.float32), 3)
    bank.update(torch.tensor([2, 0]), torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    assert torch.equal(bank.codes[2], torch.tensor([1.0, 2, 3]))
    assert torch.equal(bank.codes[1], torch.zeros(3))
    other = CodeBank(np.zeros((4, 2), np.float32), 3)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.codes, bank.codes)
    with pytest.raises(ValueError, match="different training set"):
        CodeBank(np.zeros((5, 2), np.float32), 3).load_state_dict(bank.state_dict())


def test_dpsh_run_checkpoints_its_bank_and_resumes_exactly(
    phantom_dir: Path, tmp_path: Path
) -> None:
    def cfg(epochs: int):
        return make_config("test", data=f"phantom:{phantom_dir}", method="dpsh", epochs=epochs)

    train(cfg(2), tmp_path / "full", progress=False)
    train(cfg(1), tmp_path / "cut", progress=False)
    half = load_state(tmp_path / "cut" / "last.pt", "hashing")["task_state"]["bank"]["codes"]
    seen = (half.abs().sum(1) > 0).float().mean()
    assert seen > 0.5  # one epoch wrote most training images' codes
    train(cfg(2), tmp_path / "cut", resume=True, progress=False)
    a = load_state(tmp_path / "full" / "last.pt", "hashing")
    b = load_state(tmp_path / "cut" / "last.pt", "hashing")
    assert torch.equal(a["task_state"]["bank"]["codes"], b["task_state"]["bank"]["codes"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
