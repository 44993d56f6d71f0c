"""What a hashing method is: a model factory plus a loss recipe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.registry import Registry

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Method:
    """A registered hashing method.

    Attributes:
        name: registry key used by ``cxrhash train --method``.
        build_model: ``(config, num_classes) -> nn.Module`` returning a model whose
            forward gives a :class:`cxrhash.models.output.HashOutput`.
        loss: ``(output, labels, config) -> (loss, parts)``; ``labels`` already carry
            the ``No Finding`` column when the config asks for it.
        description: one line for ``--help`` listings.
    """

    name: str
    build_model: Callable[[TrainConfig, int], nn.Module]
    loss: LossFn
    description: str = ""


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry under its name."""
    METHODS.register(method.name)(method)
    return method
