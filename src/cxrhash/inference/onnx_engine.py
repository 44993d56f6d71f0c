"""The ONNX Runtime engine: a graph written by :mod:`.onnx_export`, read as an untrusted file.

Before ONNX Runtime sees it, the file is size-capped and parsed; it must hold its weights
inside (no external data files, which a graph could point anywhere), use only the standard
operator set (no custom ops, no local functions), carry cxrhash's metadata with the model id
expected, and have exactly the input and outputs of :mod:`.onnx_graph` with the ranks and
sizes expected. Anything else is an :class:`OnnxModelError` saying what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cxrhash.inference.engine import Encoding, Engine
from cxrhash.inference.onnx_graph import (
    FORMAT,
    FORMAT_KEY,
    IMAGE_SIZE_KEY,
    INPUT,
    MAX_BYTES,
    MODEL_ID_KEY,
    OPTIONAL_OUTPUTS,
    RANKS,
    REQUIRED_OUTPUTS,
)
from cxrhash.models.feature_stats import FilmStatistics, pixel_statistics
from cxrhash.models.heatmaps import check_heatmap
from cxrhash.models.output import HashOutput

_STANDARD_DOMAINS = ("", "ai.onnx")


class OnnxModelError(ValueError):
    """An .onnx file that is missing, corrupt, foreign or made from another model."""


def default_onnx_path(checkpoint: Path) -> Path:
    """Where ``cxrhash export --format onnx`` puts a checkpoint's graph: beside it, ``.onnx``."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "best.pt"
    return checkpoint.with_suffix(".onnx")


def _read_graph(path: Path) -> tuple[bytes, Any]:
    """The file's bytes and parsed graph, refused unless self-contained and standard."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    hint = "make it with `cxrhash export --format onnx`"
    if not path.is_file():
        raise OnnxModelError(f"ONNX model {path} not found: {hint}")
    if path.stat().st_size > MAX_BYTES:
        raise OnnxModelError(f"{path} is larger than {MAX_BYTES >> 20} MiB: not read")
    data = path.read_bytes()
    try:
        graph = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's decode errors have no common base
        raise OnnxModelError(f"{path} is not a readable ONNX model ({exc}): {hint}") from exc
    if any(uses_external_data(t) for t in _get_all_tensors(graph)):
        raise OnnxModelError(f"{path} refers to external data files: not loaded")
    domains = {n.domain for n in graph.graph.node}
    if graph.functions or not domains <= set(_STANDARD_DOMAINS):
        raise OnnxModelError(f"{path} uses custom operators or functions: not loaded")
    return data, graph


def _check_metadata(path: Path, meta: dict[str, str], model_id: str, image_size: int) -> None:
    if meta.get(FORMAT_KEY) != FORMAT:
        raise OnnxModelError(f"{path} was not written by `cxrhash export --format onnx`")
    if meta.get(MODEL_ID_KEY) != model_id:
        raise OnnxModelError(
            f"{path} was exported from model {meta.get(MODEL_ID_KEY)!r}, not {model_id!r} (the "
            "checkpoint's and the index's): export this checkpoint again"
        )
    if meta.get(IMAGE_SIZE_KEY) != str(image_size):
        raise OnnxModelError(f"{path} takes {meta.get(IMAGE_SIZE_KEY)} px, not {image_size}")


def _dims_fit(shape: list[Any], rank: int, fixed: dict[int, int]) -> bool:
    """A graph shape of ``rank`` with a symbolic batch axis and the ``fixed`` sizes."""
    if len(shape) != rank or isinstance(shape[0], int):
        return False
    return all(shape[i] == v for i, v in fixed.items())


class OnnxEngine(Engine):
    """An exported graph run by ONNX Runtime's CPU provider with ``threads`` intra-op threads.

    Only the ``attention`` heat-map exists here: Grad-CAM needs autograd (use PyTorch).
    """

    name = "onnx"

    def __init__(
        self, path: Path, *, model_id: str, image_size: int, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        data, _ = _read_graph(self.path)
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime's errors have no public base class
            raise OnnxModelError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        meta = session.get_modelmeta().custom_metadata_map
        _check_metadata(self.path, meta, model_id, image_size)
        self.session = session
        self.model_id, self.image_size, self.threads = model_id, image_size, threads
        self.outputs = self._check_signature()

    def describe(self) -> dict[str, Any]:
        """The name, the intra-op threads (``None``: ONNX Runtime's default, one per core)
        and the graph's file name without its directory."""
        return {"name": self.name, "threads": self.threads, "onnx_file": self.path.name}

    def _check_signature(self) -> list[str]:
        """The output names, after checking the input and outputs against the contract."""
        inputs = self.session.get_inputs()
        size = self.image_size
        if [i.name for i in inputs] != [INPUT] or not _dims_fit(
            inputs[0].shape, 4, {1: 1, 2: size, 3: size}
        ):
            raise OnnxModelError(f"{self.path}: its input is not `image` B×1×{size}×{size}")
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        names = [n for n in (*REQUIRED_OUTPUTS, *OPTIONAL_OUTPUTS) if n in outputs]
        if set(outputs) != set(names) or not set(REQUIRED_OUTPUTS) <= set(names):
            raise OnnxModelError(f"{self.path}: unexpected outputs {sorted(outputs)}")
        for name in names:
            if not _dims_fit(outputs[name], RANKS[name], {}):
                raise OnnxModelError(f"{self.path}: output {name!r} has shape {outputs[name]}")
        return names

    def encode(self, x: Tensor, heatmap: str = "attention") -> Encoding:
        """The graph's outputs for ``x`` as tensors (the attention map as the heat-map)."""
        if check_heatmap(heatmap) != "attention":
            raise ValueError(
                f"the {heatmap} heat-map needs autograd, which the onnx engine has not: "
                "use --engine torch, or --heatmap attention"
            )
        image = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        got = dict(zip(self.outputs, self.session.run(self.outputs, {INPUT: image}), strict=True))
        if any(len(v) != len(image) for v in got.values()):
            raise OnnxModelError(f"{self.path}: an output does not follow the batch")
        t = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in got.items()}
        out = HashOutput(t["hash"], t["logits"], t["features"], t.get("attention"))
        maps = t.get("map_stats")
        # the pixel statistics need no model: those of the film, the backbone's input
        stats = None if maps is None else FilmStatistics(maps, pixel_statistics(x))
        return Encoding(out, out.attention, stats)
