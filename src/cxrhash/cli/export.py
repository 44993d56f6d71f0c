"""``cxrhash export --format onnx``, and the ``--engine`` options of index, search and serve."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cxrhash.cli.common import command, console, fail, setup_logging

if TYPE_CHECKING:
    from cxrhash.inference import EngineSpec

EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="What encodes the films: 'torch' (PyTorch, default) or 'onnx' (ONNX Runtime on "
        "the graph `cxrhash export --format onnx` wrote beside the checkpoint, or --onnx; "
        "faster on CPU, docs/bench_encode_search.md; attention heat-maps only).",
    ),
]
OnnxOpt = Annotated[
    Path | None,
    typer.Option("--onnx", help="The .onnx file for --engine onnx (default: CHECKPOINT.onnx)."),
]
OnnxThreadsOpt = Annotated[
    int | None,
    typer.Option(help="ONNX Runtime's intra-op threads (default: one per core)."),
]


def engine_spec(engine: str, onnx: Path | None, threads: int | None) -> EngineSpec | None:
    """The checked ``--engine`` choice (``None``: PyTorch, the library's default)."""
    from cxrhash.inference import EngineSpec

    if engine != "onnx" and (onnx is not None or threads is not None):
        fail("--onnx and --onnx-threads go with --engine onnx")
    spec = EngineSpec(engine, onnx, threads)
    return None if spec.kind == "torch" else spec


@command()
def export(
    checkpoint: Annotated[Path, typer.Option(help="Run directory or checkpoint file.")],
    format: Annotated[str, typer.Option("--format", help="Only 'onnx'.")] = "onnx",
    out: Annotated[
        Path | None, typer.Option(help="Where to write (default: the checkpoint's name, .onnx).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Write the encoder (film → hash outputs, logits, embedding, attention map, backbone map
    statistics) as ONNX with a dynamic batch axis, for `--engine onnx`; it carries the model
    id and is checked against PyTorch before it is kept."""
    setup_logging(verbose)
    if format != "onnx":
        fail(f"--format must be 'onnx', got {format!r}")
    from cxrhash.inference.onnx_engine import default_onnx_path
    from cxrhash.inference.onnx_export import export_onnx
    from cxrhash.training.checkpoint import load_model

    model, payload = load_model(checkpoint)
    path = out or default_onnx_path(Path(payload["path"]))
    size = int(payload["config"]["image_size"])
    export_onnx(model, path, model_id=payload["model_id"], image_size=size)
    console.print(f"wrote {path} (model {payload['model_id']}, {size} px, dynamic batch)")
