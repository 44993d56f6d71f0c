"""``--engine``: which engine encodes, and opening it for a loaded checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from cxrhash.inference.engine import ENGINES, Encoder
from cxrhash.inference.onnx_engine import OnnxEngine, default_onnx_path


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
        path = self.onnx_path or default_onnx_path(Path(payload["path"]))
        size = int(payload["config"]["image_size"])
        return OnnxEngine(path, model_id=payload["model_id"], image_size=size, threads=self.threads)
