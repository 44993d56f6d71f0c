"""Inference engines (issue #15 item 3): one job, "a batch of S×S films → hash outputs,
logits, float embedding, attention map and backbone map statistics", done by PyTorch
(:class:`TorchEngine`, the trained ``nn.Module``) or by ONNX Runtime (:class:`OnnxEngine`, a
graph written by ``cxrhash export --format onnx``). Grad-CAM needs autograd: torch only.
"""

from cxrhash.inference.engine import (
    ENGINES,
    Encoder,
    Encoding,
    Engine,
    TorchEngine,
    as_engine,
)
from cxrhash.inference.spec import EngineSpec

__all__ = ["ENGINES", "Encoder", "Encoding", "Engine", "EngineSpec", "TorchEngine", "as_engine"]
