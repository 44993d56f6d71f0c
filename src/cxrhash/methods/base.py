"""What a hashing method is: a model factory plus a loss recipe."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.registry import Registry

if TYPE_CHECKING:
    from cxrhash.methods.code_bank import CodeBank

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]
EpochHook = Callable[[nn.Module, "EpochInfo", TrainConfig], None]


@dataclass(frozen=True)
class EpochInfo:
    """Where training stands when an epoch starts (for continuation schedules)."""

    epoch: int  # 0-based
    epochs: int
    steps_per_epoch: int


@dataclass
class LossContext:
    """What a loss may get beyond the batch (methods with ``uses_bank`` or ``takes_context``).

    Attributes:
        index: the batch items' rows in the training set.
        bank: the training set's :class:`~cxrhash.methods.code_bank.CodeBank`
            (``None`` unless the method uses one).
        epoch: where training stands (for loss-weight schedules), ``None`` outside training.
        step: batches of this epoch before this one.
    """

    index: torch.Tensor
    bank: CodeBank | None = None
    epoch: EpochInfo | None = None
    step: int = 0

    @property
    def epochs_done(self) -> float:
        """Training progress in epochs (epoch + fraction of it), 0 outside training."""
        if self.epoch is None:
            return 0.0
        return self.epoch.epoch + self.step / max(self.epoch.steps_per_epoch, 1)


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
        defaults: the method's hyper-parameters (loss weights, margins, schedule);
            ``TrainConfig.method_params`` overrides them by name (``--param``).
        on_epoch: called with ``(model, EpochInfo, config)`` before each epoch —
            continuation methods raise their tanh scale there.
        paper: the method's published setting, for ``cxrhash methods``.
        uses_bank: ``config -> bool``; when true the trainer keeps a
            :class:`~cxrhash.methods.code_bank.CodeBank` of every training image's
            code and calls ``loss(output, labels, config, LossContext)``.
        takes_context: the loss takes a :class:`LossContext` as its fourth
            argument even without a bank (e.g. for the epoch of a weight schedule).
        paper_backbone: the backbone the method's paper uses; the ``paper``
            profile builds it unless ``--backbone`` is given (``None`` = the
            profile's own backbone).
        rotates_codes: ``config -> bool``; when true the trainer fits the best
            model's code rotation (``models.code_rotation``) on the training films
            once training has ended.
    """

    name: str
    build_model: Callable[[TrainConfig, int], nn.Module]
    loss: LossFn
    description: str = ""
    defaults: Mapping[str, float] = field(default_factory=dict)
    on_epoch: EpochHook | None = None
    paper: str = ""
    uses_bank: Callable[[TrainConfig], bool] | None = None
    takes_context: bool = False
    paper_backbone: str | None = None
    rotates_codes: Callable[[TrainConfig], bool] | None = None

    def params(self, config: TrainConfig) -> dict[str, float]:
        """The defaults overridden by ``config.method_params``; unknown names are errors."""
        unknown = sorted(set(config.method_params) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(
                f"method {self.name!r} has no parameter(s) {unknown}; its parameters: {known}"
            )
        return {**self.defaults, **{k: float(v) for k, v in config.method_params.items()}}


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry under its name."""
    METHODS.register(method.name)(method)
    return method
