"""The parts a loss recipe reports beside its total: every term and the total as floats."""

from __future__ import annotations

from torch import Tensor


def loss_terms(total: Tensor, **terms: Tensor | float) -> dict[str, float]:
    """``{name: term, …, "total": total}`` as plain floats, in the order given.

    A method's loss returns it beside the tensor it minimises; the engine averages
    each entry over the epoch into the history (``loss_<name>``). Tensors are detached.

    Examples:
        >>> import torch
        >>> loss_terms(torch.tensor(3.0), bce=torch.tensor(1.0), code_weight=0.5)
        {'bce': 1.0, 'code_weight': 0.5, 'total': 3.0}
    """
    parts = {name: _as_float(value) for name, value in terms.items()}
    parts["total"] = _as_float(total)
    return parts


def _as_float(value: Tensor | float) -> float:
    return float(value.detach()) if isinstance(value, Tensor) else float(value)
