"""Pointing game per finding of trained attention-fusion runs on phantom films.

For each run: the share of query films whose heat-map peak (``--heatmap``: the network's
``attention``, or ``gradcam`` of its predicted findings) falls on a lesion of a given
finding (films without that finding are left out) against chance (the share of the map
that lesion covers). Prints a Markdown table; ``--out`` also writes it.

    python benchmarks/pointing.py --data runs/results/phantom-data \\
        runs/bench/phantom-cpu128/runs/deep-attention-fusion-64b-s* [--heatmap gradcam]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from results import pointing

from cxrhash.models.heatmaps import HEATMAPS


def table(run_dirs: list[Path], data_dir: Path, heatmap: str = "attention") -> str:
    """Markdown: rows = findings (and any lesion), columns = hit rate and chance, mean ± std
    over the runs."""
    scores = [pointing(d, data_dir, heatmap) for d in run_dirs]
    keys = [k for k in scores[0] if k == "all findings" or k.startswith("finding: ")]
    lines = [
        f"| lesion | peak on it (mean ± std over {len(run_dirs)} runs) | chance | films |",
        "|---|---|---|---|",
    ]
    for key in keys:
        hits = [s[key]["hit_rate"] for s in scores]
        chance = [s[key]["chance_rate"] for s in scores]
        n = [s[key]["n"] for s in scores]
        name = "any finding" if key == "all findings" else key.removeprefix("finding: ")
        lines.append(
            f"| {name} | {np.mean(hits):.3f} ± {np.std(hits):.3f} | {np.mean(chance):.3f} "
            f"| {int(np.mean(n))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Score the runs and print (and optionally write) the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run folders (best.pt, split.json)")
    ap.add_argument("--data", type=Path, required=True, help="the phantom folder of the runs")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--heatmap", choices=HEATMAPS, default="attention")
    args = ap.parse_args(argv)
    text = table(args.runs, args.data, args.heatmap)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
