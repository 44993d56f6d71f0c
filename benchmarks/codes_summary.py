"""Issue #10's summary of a finished bench: are the codes as good as their features?

For every code length and method of a ``cxrhash bench`` folder, over seeds: strict mAP of
the codes, the float upper bound, codes / float, codes − LSH of the same network's features
(paired by seed, with how many seeds are ahead), the share of distinct codes among the
database films, the two-stage rows, and each seed's codes; then attention-fusion − every
other method, paired by seed. Prints Markdown (pasted into ``docs/benchmarks-notes.md``).

    python benchmarks/codes_summary.py runs/bench/phantom-cpu128
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

FLOAT = "float upper bound (cosine)"
LSH = "LSH on features"
STORED = "two-stage (stored floats)"
ASYM = "two-stage (asymmetric re-rank)"
PRIMARY = "attention-fusion"


def load_cells(bench: Path) -> dict[tuple[int, str], dict[int, dict]]:
    """(bits, method) → seed → the strict rows of a finished main-group deep cell."""
    out: dict[tuple[int, str], dict[int, dict]] = defaultdict(dict)
    for path in sorted((bench / "cells").glob("deep-*.json")):
        cell = json.loads(path.read_text())
        if cell.get("group", "main") != "main" or cell.get("variant"):
            continue
        rows = {"codes": cell["metrics"]["strict"], **cell["references"]["strict"]}
        out[(int(cell["bits"]), cell["method"])][int(cell["seed"])] = rows
    return out


def _ms(values: list[float], digits: int = 3) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _paired(a: dict[int, float], b: dict[int, float]) -> str:
    seeds = sorted(set(a) & set(b))
    diff = [a[s] - b[s] for s in seeds]
    ahead = sum(d > 0 for d in diff)
    return f"{np.mean(diff):+.3f} ± {np.std(diff):.3f} ({ahead}/{len(seeds)} ahead)"


def summary(cells: dict[tuple[int, str], dict[int, dict]]) -> str:
    """The Markdown table and the paired comparisons with the primary method."""
    lines = [
        "| bits | method | strict mAP (codes) | float upper bound | codes / float "
        "| codes − LSH of its features | distinct share | two-stage, asymmetric "
        "| two-stage, stored floats | per seed (codes) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (bits, method), seeds in sorted(cells.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        order = sorted(seeds)

        def row(name: str, seeds: dict[int, dict] = seeds, order: list[int] = order) -> list[float]:
            return [seeds[s][name]["mAP"] for s in order]

        codes = dict(zip(order, row("codes"), strict=True))
        lsh = dict(zip(order, row(LSH), strict=True))
        ratio = [c / f for c, f in zip(row("codes"), row(FLOAT), strict=True)]
        share = [seeds[s]["codes"].get("distinct_share", np.nan) for s in order]
        lines.append(
            f"| {bits} | {method} | {_ms(row('codes'))} | {_ms(row(FLOAT))} | {_ms(ratio)} "
            f"| {_paired(codes, lsh)} | {_ms(share)} | {_ms(row(ASYM))} | {_ms(row(STORED))} "
            f"| {', '.join(f'{v:.3f}' for v in row('codes'))} |"
        )
    lines.append("")
    for bits in sorted({b for b, _ in cells}, reverse=True):
        primary = cells.get((bits, PRIMARY))
        if not primary:
            continue
        mine = {s: r["codes"]["mAP"] for s, r in primary.items()}
        for (b, method), seeds in sorted(cells.items()):
            if b == bits and method != PRIMARY:
                other = {s: r["codes"]["mAP"] for s, r in seeds.items()}
                lines.append(
                    f"{PRIMARY} − {method} at {bits} bits, paired by seed: {_paired(mine, other)}"
                )
                lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the summary of one bench folder."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("bench", type=Path, help="a `cxrhash bench --out` folder")
    args = ap.parse_args(argv)
    cells = load_cells(args.bench)
    if not cells:
        ap.error(f"no finished deep cells in {args.bench / 'cells'}")
    print(summary(cells))


if __name__ == "__main__":
    main()
