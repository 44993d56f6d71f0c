"""Encoding throughput: attention-fusion vs the bare backbone at the same size and batch.

Writes ``docs/bench_encode_search.md`` (``--out``) and prints the same table. Search speed at
10^4–10^7 codes, every backend beside FAISS flat, is ``benchmarks/search.py``.

    python benchmarks/encode_search.py
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrhash.models.attention_fusion import AttentionFusionNet
from cxrhash.models.backbones import create_backbone

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
    ap.add_argument("--out", type=Path, default=DOCS)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    print("## Encoding throughput")
    configs = args.config or [("resnet18", 64), ("resnet18", 128), ("resnet50", 224)]
    enc = bench_encoding(configs, args.batch, args.repeats, 64)
    args.out.write_text(
        "# Encoding benchmark\n\n"
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, CPU only. Command: "
        "`python benchmarks/encode_search.py`.\n\n"
        "## Encoding throughput (eval mode, no gradients)\n\n"
        "`overhead` = bare-backbone throughput / attention-fusion throughput: the extra time "
        "the attention and fusion branches cost at the same backbone, size and batch. Both "
        "use the backbone up to stage 3 (the feature map the attention reads).\n\n"
        f"{enc}\n\n"
        "Search speed (every backend at 10^4–10^7 codes beside FAISS flat) is in "
        "`docs/search.md` (`python benchmarks/search.py`).\n"
    )
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
