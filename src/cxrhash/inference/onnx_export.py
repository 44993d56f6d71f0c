"""``cxrhash export --format onnx``: the encoder (film → hash outputs, logits, float
embedding, attention map, backbone map statistics) as an ONNX graph with a dynamic batch axis.

Written with PyTorch's TorchScript exporter (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which cxrhash does not install. The statistics of the backbone's output map
(what :mod:`cxrhash.models.feature_stats` takes with a hook) are outputs of the graph, so
the closeness calibration works with ONNX Runtime too. After writing, the graph is run by
ONNX Runtime at batches of 1 and 3 and compared with PyTorch: a network whose graph does not
follow the batch (``saliency-fusion`` crops film by film in a Python loop) is refused.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from cxrhash.inference.onnx_graph import (
    FORMAT,
    FORMAT_KEY,
    IMAGE_SIZE_KEY,
    INPUT,
    MODEL_ID_KEY,
    OPSET,
    REQUIRED_OUTPUTS,
)
from cxrhash.models.feature_stats import backbone_of

#: Largest difference of any output between ONNX Runtime and PyTorch accepted at export.
TOLERANCE = 1e-3


class OnnxExportError(ValueError):
    """The network cannot be exported faithfully to ONNX."""


class EncoderOutputs(nn.Module):
    """The network's outputs as a tuple, with its backbone map's channel means and stds."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._maps: list[Tensor] = []
        backbone = backbone_of(model)
        self.has_stats = backbone is not None
        self.hook = None
        if backbone is not None:
            self.hook = backbone.register_forward_hook(lambda _m, _i, out: self._maps.append(out))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        self._maps.clear()
        out = self.model(x)
        parts = [out.hash, out.logits, out.features]
        if out.attention is not None:
            parts.append(out.attention)
        if self.has_stats:
            flat = self._maps[-1].flatten(2)
            mean = flat.mean(2)
            std = (flat - mean.unsqueeze(2)).square().mean(2).sqrt()  # population std
            parts.append(torch.cat([mean, std], dim=1))
        return tuple(parts)


def _output_names(model: nn.Module, size: int, wrapper: EncoderOutputs) -> list[str]:
    with torch.no_grad():
        has_attention = model(torch.rand(2, 1, size, size)).attention is not None
    return [
        *REQUIRED_OUTPUTS,
        *(["attention"] if has_attention else []),
        *(["map_stats"] if wrapper.has_stats else []),
    ]


def export_onnx(model: nn.Module, path: Path, *, model_id: str, image_size: int) -> Path:
    """Write ``model`` (eval mode) to ``path`` as ONNX, carrying ``model_id``; checked
    against PyTorch at batches of 1 and 3 before it is kept.

    Raises:
        OnnxExportError: the export failed, or its graph does not match PyTorch.
    """
    model = model.cpu().eval()
    wrapper = EncoderOutputs(model).eval()
    try:
        data = _export(model, wrapper, model_id, image_size)
    finally:
        if wrapper.hook is not None:
            wrapper.hook.remove()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _export(model: nn.Module, wrapper: EncoderOutputs, model_id: str, image_size: int) -> bytes:
    """The checked ONNX bytes of ``wrapper`` with cxrhash's metadata."""
    names = _output_names(model, image_size, wrapper)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                wrapper,
                (torch.rand(2, 1, image_size, image_size),),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter takes a file object
                input_names=[INPUT],
                output_names=names,
                dynamic_axes={n: {0: "batch"} for n in [INPUT, *names]},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many kinds
        raise OnnxExportError(f"{type(model).__name__} could not be exported: {exc}") from exc
    graph = onnx.load_model_from_string(buffer.getvalue())
    props = {FORMAT_KEY: FORMAT, MODEL_ID_KEY: model_id, IMAGE_SIZE_KEY: str(image_size)}
    onnx.helper.set_model_props(graph, props)
    data = graph.SerializeToString()
    _check_against_torch(data, wrapper, names, image_size)
    return data


def _check_against_torch(data: bytes, wrapper: EncoderOutputs, names: list[str], size: int) -> None:
    """Refuse a graph whose outputs differ from PyTorch's at batches of 1 and 3."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 3):
        x = torch.rand(batch, 1, size, size, generator=generator)
        try:
            got = session.run(None, {INPUT: x.numpy()})
        except Exception as exc:
            raise OnnxExportError(
                f"the exported graph fails at batch {batch} (its network does not follow a "
                f"dynamic batch: export it with --engine torch only): {exc}"
            ) from exc
        with torch.no_grad():
            want = wrapper(x)
        for name, a, b in zip(names, got, want, strict=True):
            close = np.allclose(a, b.numpy(), rtol=TOLERANCE, atol=TOLERANCE)
            if a.shape != tuple(b.shape) or not close:
                raise OnnxExportError(
                    f"the exported graph's {name!r} differs from PyTorch's at batch {batch}: "
                    "this network cannot be encoded with ONNX Runtime"
                )
