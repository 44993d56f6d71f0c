"""Measure recipe variants of hashing methods against each other, paired by seed.

Each variant is a name and ``cxrhash train`` options; every variant × seed is
trained with the same profile, bits and data (a seed fixes the patient-disjoint
split, so variants of one seed see the same films), evaluated under the strict
protocol, and compared with the first variant by per-seed paired differences.
The table is written as a section (replaced on re-runs) of ``--out``; finished
runs are skipped and unfinished ones resumed.

    python benchmarks/recipes.py --title "DPSH: training-set bank vs batch pairs" \\
        --variant "bank=--method dpsh" --variant "batch=--method dpsh --param bank=0"
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
from results import REPO, one_run, run


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def section(title: str, command: str, runs: dict[str, dict[int, dict]], note: str = "") -> str:
    """Markdown section: per-variant strict mAP (hash, float), the distinct-code share of the
    database codes, codes / float and codes − LSH of the same features (per seed), paired
    differences, cost."""
    names = list(runs)
    base = runs[names[0]]
    lines = [
        f"## {title}",
        "",
        f"Command: `{command}`",
        "",
        "| variant | strict mAP (codes) | distinct share | float upper bound | codes / float "
        "| codes − LSH of the features (paired) | − first variant (paired) | ahead | rollbacks "
        "| train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        seeds = sorted(runs[name])
        codes = [_strict(runs[name][s], "hash codes") for s in seeds]
        shares = [_distinct_share(runs[name][s]) for s in seeds]
        floats = [_strict(runs[name][s], "float upper bound (cosine)") for s in seeds]
        ratio = _mean_std([c / f for c, f in zip(codes, floats, strict=True)])
        vs_lsh = _mean_std(
            [
                c - _strict(runs[name][s], "LSH on features")
                for c, s in zip(codes, seeds, strict=True)
            ]
        )
        diffs = [codes[i] - _strict(base[s], "hash codes") for i, s in enumerate(seeds)]
        ahead = f"{sum(d > 0 for d in diffs)}/{len(diffs)}" if name != names[0] else "–"
        rollbacks = sum(len(runs[name][s]["train"].get("rollbacks", [])) for s in seeds)
        seconds = np.mean([runs[name][s]["train"]["train_seconds"] for s in seeds])
        diff = _mean_std(diffs) if name != names[0] else "–"
        known = [v for v in shares if v is not None]  # an older eval.json lacks the share
        share = _mean_std(known) if len(known) == len(shares) else "–"
        lines.append(
            f"| {name} | {_mean_std(codes)} | {share} | {_mean_std(floats)} | {ratio} | {vs_lsh} "
            f"| {diff} | {ahead} | {rollbacks} | {seconds:.0f} |"
        )
    return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def _strict(facts: dict, row: str) -> float:
    return float(facts["eval"]["protocols"]["strict"]["rows"][row]["mAP"])


def _distinct_share(facts: dict) -> float | None:
    """Distinct database codes / films of the strict protocol (None in an older eval.json)."""
    value = facts["eval"]["protocols"]["strict"]["rows"]["hash codes"].get("distinct_share")
    return None if value is None else float(value)


def write_section(path: Path, title: str, text: str) -> None:
    """Put ``text`` into ``path`` in place of the section with the same title (or append it)."""
    old = (
        path.read_text()
        if path.exists()
        else "# Recipe measurements\n\nWritten by "
        + ("`python benchmarks/recipes.py`; each section says the command that produced it.\n\n")
    )
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old + text + "\n"
    path.write_text(new)


def _without_note(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif not a.startswith("--note="):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> None:
    """Train and score every variant × seed; write the section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--title", required=True)
    ap.add_argument(
        "--variant", action="append", required=True, help="NAME=TRAIN OPTIONS (repeatable)"
    )
    ap.add_argument("--data", default=f"phantom:{REPO / 'runs' / 'results' / 'phantom-data'}")
    ap.add_argument("--profile", default="cpu-fast")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "recipes")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "recipes.md")
    ap.add_argument("--note", default="", help="A paragraph printed under the table.")
    args = ap.parse_args(argv)

    phantom = REPO / "runs" / "results" / "phantom-data"
    if args.data == f"phantom:{phantom}" and not (phantom / "labels.csv").exists():
        cli = [sys.executable, "-m", "cxrhash.cli"]
        run([*cli, "phantom", "--out", str(phantom), "--n", "1500", "--size", "128"])
    variants: dict[str, list[str]] = {}
    for item in args.variant:
        name, sep, options = item.partition("=")
        if not sep or not name:
            ap.error(f"--variant expects NAME=OPTIONS, got {item!r}")
        variants[name] = shlex.split(options)
    slug = re.sub(r"[^a-z0-9]+", "-", args.title.lower()).strip("-")
    runs = {
        name: {
            seed: one_run(
                args.data,
                args.runs / slug / f"{name}-{args.bits}b-s{seed}",
                args.profile,
                args.bits,
                seed,
                args.epochs,
                tuple(options),
            )
            for seed in args.seeds
        }
        for name, options in variants.items()
    }
    command = "python benchmarks/recipes.py " + " ".join(
        shlex.quote(a)
        for a in _without_note(sys.argv[1:] if argv is None else argv)
        if not a.startswith(str(REPO))
    )
    text = section(args.title, command, runs, args.note)
    print(text)
    write_section(args.out, args.title, text)
    (args.runs / slug / "summary.json").write_text(json.dumps(runs, indent=2, default=str))


if __name__ == "__main__":
    main()
