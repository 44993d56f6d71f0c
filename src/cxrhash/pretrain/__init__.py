"""Self-supervised pretraining of backbones on unlabelled radiographs.

A method writes ``OUT/backbone.pt``, which ``cxrhash train --backbone-weights``
loads. Methods are registered in ``PRETRAIN_METHODS`` by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cxrhash.pretrain.c2l import C2LConfig, PretrainError, pretrain_c2l
from cxrhash.pretrain.unlabeled import UnlabeledImages, list_images
from cxrhash.registry import Registry


@dataclass(frozen=True)
class PretrainMethod:
    """A pretraining method: its config dataclass and its run function.

    Attributes:
        config_type: dataclass of settings, built from keyword arguments.
        run: ``run(config, data_dir, out_dir, *, resume, progress) -> summary dict``.
    """

    config_type: type
    run: Callable[..., dict[str, Any]]


PRETRAIN_METHODS: Registry[PretrainMethod] = Registry("pretraining method")
PRETRAIN_METHODS.register("c2l")(PretrainMethod(config_type=C2LConfig, run=pretrain_c2l))

__all__ = [
    "PRETRAIN_METHODS",
    "C2LConfig",
    "PretrainError",
    "PretrainMethod",
    "UnlabeledImages",
    "list_images",
    "pretrain_c2l",
]
