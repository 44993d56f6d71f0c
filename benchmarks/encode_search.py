"""Encoding throughput: attention-fusion vs the bare backbone at the same size and batch, and
the engines that can run attention-fusion (issue #15): the torch engine (PyTorch eager, as
``--engine torch`` runs it), TorchScript (traced and frozen), ``torch.compile`` (with
``--compile``: minutes of compiling per shape here) and the ONNX Runtime engine, in the same run,
in interleaved rounds, every row computing the same figures (pixel statistics included).

Writes ``docs/bench_encode_search.md`` (``--out``) and prints the same tables. Search speed at
10^4–10^7 codes, every backend beside FAISS flat, is ``benchmarks/search.py``.

    python benchmarks/encode_search.py --compile
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrhash.inference import TorchEngine
from cxrhash.inference.onnx_engine import OnnxEngine
from cxrhash.inference.onnx_export import EncoderOutputs, export_onnx
from cxrhash.models.attention_fusion import AttentionFusionNet
from cxrhash.models.backbones import create_backbone
from cxrhash.models.feature_stats import pixel_statistics

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bench_encode_search.md"


class BareBackboneHash(nn.Module):
    """The same backbone and feature stage with global pooling and a hash layer only."""

    def __init__(self, backbone: str, bits: int, feature_stage: int) -> None:
        super().__init__()
        spec = create_backbone(backbone, feature_stage=feature_stage)
        self.backbone = spec.module
        self.hash = nn.Linear(spec.out_channels, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x).mean(dim=(2, 3))
        return torch.tanh(self.hash(f))


def images_per_second(model: nn.Module, size: int, batch: int, repeats: int) -> float:
    """Median throughput of forward passes in eval mode without gradients."""
    model.eval()
    x = torch.rand(batch, 1, size, size)
    with torch.no_grad():
        model(x)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


def bench_encoding(configs: list[tuple[str, int]], batch: int, repeats: int, bits: int) -> str:
    """Markdown table: attention-fusion vs bare backbone at the same size and batch."""
    lines = [
        "| backbone | size | batch | bare backbone img/s | attention-fusion img/s | overhead |",
        "|---|---|---|---|---|---|",
    ]
    for backbone, size in configs:
        torch.manual_seed(0)
        bare = BareBackboneHash(backbone, bits, 3)
        full = AttentionFusionNet(bits=bits, num_classes=15, backbone=backbone)
        b = images_per_second(bare, size, batch, repeats)
        f = images_per_second(full, size, batch, repeats)
        row = f"| {backbone} | {size} | {batch} | {b:.1f} | {f:.1f} | {b / f:.2f}× time |"
        print(row, flush=True)
        lines.append(row)
    return "\n".join(lines)


Run = Callable[[torch.Tensor], object]


def with_pixels(net: Callable[[torch.Tensor], object]) -> Run:
    """``net``'s outputs and the films' :func:`pixel_statistics`, which both cxrhash engines
    compute outside the network (numpy) and a graph of the network alone leaves out."""
    return lambda x: (net(x), pixel_statistics(x))


def engine_runners(
    model: nn.Module, size: int, shapes: tuple[int, ...], compile_: bool, threads: int
) -> tuple[dict[str, Run], dict[str, str]]:
    """Each row's film → every figure the index and search use (hash outputs, logits,
    embedding, attention map, backbone map statistics, pixel statistics) and, for a row that
    could not be made, why not. ``torch eager`` and ``ONNX Runtime`` are the two engines
    (``--engine torch|onnx``) as cxrhash runs them; TorchScript and torch.compile run the
    export's wrapper (:class:`EncoderOutputs`) on a copy of the model, whose hook never
    touches the model the torch engine runs, and add the pixel statistics."""
    runs: dict[str, Run] = {"torch eager": TorchEngine(model).encode}
    failed: dict[str, str] = {}
    wrapper = EncoderOutputs(copy.deepcopy(model)).eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(wrapper, torch.rand(2, 1, size, size), check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            runs["TorchScript (traced, frozen)"] = with_pixels(frozen)
    except Exception as exc:  # reported in the table, not raised
        failed["TorchScript (traced, frozen)"] = f"{type(exc).__name__}: {exc}"[:120]
    if compile_:
        compiled = torch.compile(wrapper)
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                for b in shapes:  # compile each batch shape before it is timed
                    compiled(torch.rand(b, 1, size, size))
            runs["torch.compile"] = with_pixels(compiled)
            print(f"  torch.compile: {time.perf_counter() - t0:.0f} s to compile", flush=True)
        except Exception as exc:
            failed["torch.compile"] = f"{type(exc).__name__}: {exc}"[:120]
    path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(model, path, model_id="bench", image_size=size)
    onnx_engine = OnnxEngine(path, model_id="bench", image_size=size, threads=threads)
    runs["ONNX Runtime"] = onnx_engine.encode
    return runs, failed


def timed(run: Run, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after one warm-up)."""
    with torch.no_grad():
        run(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _spread(values: list[float], fmt: str) -> str:
    """``median (min–max)`` over the rounds."""
    med = float(np.median(values))
    return f"{med:{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


def bench_engines(
    configs: list[tuple[str, int]],
    batch: int,
    rounds: int,
    repeats: int,
    compile_: bool,
    threads: int,
) -> tuple[str, list[str]]:
    """Markdown table: images/s at ``batch`` and ms per single-film query of each engine,
    median over ``rounds`` interleaved rounds (min–max), and the ratio to eager; and per
    configuration what :func:`pixel_statistics` alone, part of every row, costs."""
    lines = [
        f"| backbone | size | engine | img/s (batch {batch}) | ms/query (batch 1) | × eager img/s "
        "| × eager ms/query |",
        "|---|---|---|---|---|---|---|",
    ]
    pixels: list[str] = []
    for backbone, size in configs:
        torch.manual_seed(0)
        model = AttentionFusionNet(bits=64, num_classes=15, backbone=backbone).eval()
        runs, failed = engine_runners(model, size, (batch, 1), compile_, threads)
        xb, x1 = torch.rand(batch, 1, size, size), torch.rand(1, 1, size, size)
        speed: dict[str, list[float]] = {name: [] for name in runs}
        latency: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                speed[name].append(batch / timed(run, xb, repeats))
                latency[name].append(1000 * timed(run, x1, max(repeats, 5)))
        batch_ms = 1000 * timed(pixel_statistics, xb, max(repeats, 5))
        film_ms = 1000 * timed(pixel_statistics, x1, max(repeats, 5))
        pixels.append(
            f"{backbone} at {size} px: {batch_ms:.1f} ms per batch of {batch}, "
            f"{film_ms:.2f} ms per single film"
        )
        eager_speed = float(np.median(speed["torch eager"]))
        eager_ms = float(np.median(latency["torch eager"]))
        for name in runs:
            ratio = float(np.median(speed[name])) / eager_speed
            faster = eager_ms / float(np.median(latency[name]))
            row = (
                f"| {backbone} | {size} | {name} | {_spread(speed[name], '.1f')} | "
                f"{_spread(latency[name], '.1f')} | {ratio:.2f} | {faster:.2f} |"
            )
            print(row, flush=True)
            lines.append(row)
        for name, why in failed.items():
            lines.append(f"| {backbone} | {size} | {name} | — | — | — | failed: {why} |")
    return "\n".join(lines), pixels


def _config(text: str) -> tuple[str, int]:
    """``BACKBONE:SIZE`` → (backbone, size)."""
    backbone, sep, size = text.partition(":")
    if not sep or not size.isdigit():
        raise argparse.ArgumentTypeError(f"expected BACKBONE:SIZE, got {text!r}")
    return backbone, int(size)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write the Markdown report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--config",
        type=_config,
        action="append",
        default=None,
        help="BACKBONE:SIZE to measure (repeatable; default resnet18:64, resnet18:128, "
        "resnet50:224)",
    )
    ap.add_argument("--engine-batch", type=int, default=64, help="batch of the img/s column")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the engines")
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    ap.add_argument(
        "--compile", action="store_true", help="also torch.compile (minutes per shape here)"
    )
    ap.add_argument("--out", type=Path, default=DOCS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("## Encoding throughput")
    configs = args.config or [("resnet18", 64), ("resnet18", 128), ("resnet50", 224)]
    enc = bench_encoding(configs, args.batch, args.repeats, 64)
    print("## Engines")
    load_before = os.getloadavg()[0]
    engines, pixels = bench_engines(
        configs, args.engine_batch, args.rounds, args.repeats, args.compile, args.threads
    )
    load = f"load average {load_before:.1f} at the start of the engines, "
    load += f"{os.getloadavg()[0]:.1f} at the end"
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != str(args.out)]
    command = " ".join(["python benchmarks/encode_search.py", *shown]).replace(" --out", "")
    args.out.write_text(
        "# Encoding benchmark\n\n"
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, {args.threads} ONNX Runtime intra-op threads "
        f"(ONNX Runtime {_ort_version()}), CPU only, shared with other jobs. Command: "
        f"`{command}`.\n\n"
        "## Encoding throughput (eval mode, no gradients)\n\n"
        "`overhead` = bare-backbone throughput / attention-fusion throughput: the extra time "
        "the attention and fusion branches cost at the same backbone, size and batch. Both "
        "use the backbone up to stage 3 (the feature map the attention reads).\n\n"
        f"{enc}\n\n"
        "## Engines (issue #15: `--engine torch|onnx`)\n\n"
        f"{engines_text(args, load)}\n\n{engines}\n\n"
        "`pixel_statistics` alone, in the same run (part of every row above): "
        + "; ".join(pixels)
        + ".\n\n"
        "Search speed (every backend at 10^4–10^7 codes beside FAISS flat) is in "
        "`docs/search.md` (`python benchmarks/search.py`).\n"
    )
    print(f"written {args.out}")


def engines_text(args: argparse.Namespace, load: str) -> str:
    """The engines section's text: what every row computes, and how it is timed."""
    compiled = (
        "* `torch.compile`: the same wrapper through `torch.compile`, then `pixel_statistics`.\n"
        if args.compile
        else "* torch.compile was not measured in this run (`--compile`: its first call "
        "took ~2 min per batch shape for ResNet-18 at 64 px on this machine).\n"
    )
    return (
        "attention-fusion (64 bits, 15 findings). Every row computes the same figures for a "
        "batch of films: the network's outputs the index and search use (hash outputs, logits, "
        "float embedding, attention map), the backbone map statistics (each channel's mean and "
        "standard deviation over the backbone's output map) and the films' pixel statistics "
        "(`pixel_statistics`: intensity histogram, gradient and Laplacian quantiles and means, "
        "computed in numpy outside the network); the last two feed the closeness "
        "calibration.\n\n"
        "* `torch eager`: `TorchEngine.encode`, what `--engine torch` runs for `index` and "
        "`search`: the model's forward in eval mode without gradients, the map statistics and "
        "the pixel statistics of the backbone's input taken by hooks on its backbone.\n"
        "* `TorchScript (traced, frozen)`, a reference and not a cxrhash engine: the export's "
        "wrapper `EncoderOutputs` (network outputs and map statistics) through "
        "`torch.jit.trace` + `freeze` + `optimize_for_inference`, then `pixel_statistics` of "
        "the films.\n"
        f"{compiled}"
        "* `ONNX Runtime`: `OnnxEngine.encode`, what `--engine onnx` runs: the graph of "
        "`cxrhash export --format onnx` (network outputs and map statistics) run by ONNX "
        "Runtime, tensor conversion included, then `pixel_statistics` of the films.\n\n"
        "In each of the rounds every row is timed in turn, img/s as the median of "
        f"{args.repeats} batches of {args.engine_batch}, ms/query as the median of "
        f"{max(args.repeats, 5)} single films; the cells give the median over the "
        f"{args.rounds} rounds (min–max). The machine's 2 cores are shared with other jobs "
        f"({load}), so the spread is wide; the ratios compare rows within the same run."
    )


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


if __name__ == "__main__":
    main()
