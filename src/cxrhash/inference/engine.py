"""The engine contract and the PyTorch engine (today's forward pass, with its hooks)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cxrhash.models.feature_stats import captured_map_statistics
from cxrhash.models.heatmaps import query_heatmaps
from cxrhash.models.output import HashOutput

#: The engines ``--engine`` accepts.
ENGINES = ("torch", "onnx")


@dataclass
class Encoding:
    """What an engine makes of a batch of B films: the network's outputs, the heat-maps
    asked for (``None``: the network has no attention map) and the backbone map statistics
    of the closeness calibration (B×2C; ``None``: the network has no backbone map)."""

    output: HashOutput
    heatmaps: Tensor | None
    map_stats: Tensor | None


class Engine(ABC):
    """Encodes batches of B×1×S×S films in [0, 1]."""

    name: str = ""

    @abstractmethod
    def encode(self, x: Tensor, heatmap: str = "attention") -> Encoding:
        """The outputs for ``x`` with heat-maps of kind ``heatmap`` (``models.heatmaps``)."""


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


@dataclass(frozen=True)
class EngineSpec:
    """Which engine encodes (``--engine``): ``torch``, or ``onnx`` reading ``onnx_path``
    (default: the checkpoint's name with ``.onnx``) with ``threads`` intra-op threads
    (``None``: ONNX Runtime's default, one per core)."""

    kind: str = "torch"
    onnx_path: Path | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {self.kind!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"ONNX Runtime threads must be 1 or more, got {self.threads}")

    def open(self, model: nn.Module, payload: dict[str, Any]) -> Encoder:
        """What encodes for a loaded checkpoint (``load_model``'s model and payload): the
        model itself, run by PyTorch, or the ONNX graph exported from it."""
        if self.kind == "torch":
            return model
        from cxrhash.inference.onnx_engine import OnnxEngine, default_onnx_path

        path = self.onnx_path or default_onnx_path(Path(payload["path"]))
        size = int(payload["config"]["image_size"])
        return OnnxEngine(path, model_id=payload["model_id"], image_size=size, threads=self.threads)
