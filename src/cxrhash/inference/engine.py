"""The engine contract and the PyTorch engine (today's forward pass, with its hooks)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cxrhash.models.feature_stats import FilmStatistics, captured_map_statistics
from cxrhash.models.heatmaps import query_heatmaps
from cxrhash.models.output import HashOutput

#: The engines ``--engine`` accepts.
ENGINES = ("torch", "onnx")


@dataclass
class Encoding:
    """What an engine makes of a batch of B films: the network's outputs, the heat-maps
    asked for (``None``: the network has no attention map) and the statistics of the
    closeness calibration (the backbone's B×2C map statistics and its input's pixel
    statistics; ``None``: the network has no backbone map)."""

    output: HashOutput
    heatmaps: Tensor | None
    map_stats: FilmStatistics | None


class Engine(ABC):
    """Encodes batches of B×1×S×S films in [0, 1]."""

    name: str = ""

    @abstractmethod
    def encode(self, x: Tensor, heatmap: str = "attention") -> Encoding:
        """The outputs for ``x`` with heat-maps of kind ``heatmap`` (``models.heatmaps``)."""

    def describe(self) -> dict[str, Any]:
        """What a client may be told of the engine (``GET /api/stats``): its name; no paths."""
        return {"name": self.name}


class TorchEngine(Engine):
    """The trained ``nn.Module`` run by PyTorch (eval mode, no gradients but Grad-CAM's)."""

    name = "torch"

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def encode(self, x: Tensor, heatmap: str = "attention") -> Encoding:
        """One forward pass; the map statistics are taken by a hook on the backbone."""
        self.model.eval()
        param = next(self.model.parameters(), None)
        if param is not None:
            x = x.to(param.device)
        with captured_map_statistics(self.model) as captured, torch.no_grad():
            out, maps = query_heatmaps(self.model, x, heatmap)
        return Encoding(out, maps, captured[0] if captured else None)


#: What the encoding functions accept: a model (run by :class:`TorchEngine`) or an engine.
Encoder = nn.Module | Engine


def as_engine(encoder: Encoder) -> Engine:
    """``encoder`` itself if it is an engine, else the model run by PyTorch."""
    return encoder if isinstance(encoder, Engine) else TorchEngine(encoder)
