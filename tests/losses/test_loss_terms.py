"""``loss_terms``: the parts every recipe reports, as floats, the total last."""

from __future__ import annotations

import torch

from cxrhash.losses import loss_terms


def test_terms_are_floats_in_order_with_the_total_last() -> None:
    a = torch.tensor(2.0, requires_grad=True)
    total = 3 * a
    parts = loss_terms(total, bce=a * 1, code_weight=0.25, balance=torch.tensor(1.5))
    assert list(parts) == ["bce", "code_weight", "balance", "total"]
    assert parts == {"bce": 2.0, "code_weight": 0.25, "balance": 1.5, "total": 6.0}
    assert all(type(v) is float for v in parts.values())
    total.backward()  # reporting the parts leaves the graph usable
    assert a.grad is not None and float(a.grad) == 3.0


def test_a_total_alone_is_reported_once() -> None:
    assert loss_terms(torch.tensor(1.0)) == {"total": 1.0}
