"""Train and evaluate attention-fusion on real NIH films and on phantom films.

For each dataset × bits × seed: ``cxrhash train`` (CPU profile) then ``cxrhash eval``
under both protocols; collects every run's ``eval.json`` and ``train_summary.json``
into ``docs/results.md``. Re-running skips finished runs (resumes unfinished ones).

    python benchmarks/results.py                       # the full grid of docs/results.md
    python benchmarks/results.py --bits 32 --seeds 0   # a quick subset
    python benchmarks/results.py --pretrained runs/c2l/backbone.pt  # + real films from C2L

With ``--pretrained`` every real-film (cxr-dev) configuration is trained a second time
from those backbone weights (``cxrhash train --backbone-weights``), on the same split,
and the section shows both side by side, paired by seed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
COLUMNS = ["mAP", "distinct_share", "mAP@100", "nDCG@100", "ACG@100", "mAP_w", "P@10"]
TITLES = {"distinct_share": "distinct share"}
ROWS = [
    "hash codes",
    "two-stage (asymmetric re-rank)",
    "two-stage (stored floats)",
    "float upper bound (cosine)",
    "LSH on features",
    "random codes",
]


def run(cmd: list[str]) -> float:
    """Run a cxrhash command, echo it, return its wall time; peak memory comes from the run."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return time.perf_counter() - t0


def one_run(
    data: str,
    out: Path,
    profile: str,
    bits: int,
    seed: int,
    epochs: int | None,
    extra: tuple[str, ...] = (),
) -> dict:
    """Train (or resume/skip) and evaluate one configuration; return its facts.

    ``extra`` are further ``cxrhash train`` options (e.g. ``--method dpsh --param bank=0``).
    """
    cli = [sys.executable, "-m", "cxrhash.cli"]
    facts: dict = {}
    summary = out / "train_summary.json"
    if not summary.exists():
        cmd = [
            *cli,
            "train",
            "--data",
            data,
            "--out",
            str(out),
            "--profile",
            profile,
            "--bits",
            str(bits),
            "--seed",
            str(seed),
        ]
        if epochs:
            cmd += ["--epochs", str(epochs)]
        cmd += list(extra)
        if (out / "last.pt").exists():
            cmd.append("--resume")
        run(cmd)
    facts["train"] = json.loads(summary.read_text())
    if not (out / "eval.json").exists():
        facts["eval_seconds"] = run([*cli, "eval", str(out), "--json"])
    facts["eval"] = json.loads((out / "eval.json").read_text())
    return facts


def pointing(run_dir: Path, data_dir: Path, heatmap: str = "attention") -> dict:
    """Pointing game of the run's heat-map (``attention`` or ``gradcam``) on the lesion masks
    of its query films (cached per kind): any lesion, masses and nodules, and each finding
    alone (key ``finding: NAME``)."""
    cache = run_dir / ("pointing.json" if heatmap == "attention" else f"pointing-{heatmap}.json")
    if cache.exists():
        cached = json.loads(cache.read_text())
        if any(k.startswith("finding: ") for k in cached):
            return cached
    import torch
    import torch.nn.functional as F

    from cxrhash.data.phantom import load_phantom_masks
    from cxrhash.data.readers import open_dataset
    from cxrhash.data.splits import load_split
    from cxrhash.evaluation.localization import pointing_game
    from cxrhash.training.checkpoint import load_model

    model, payload = load_model(run_dir / "best.pt")
    size = payload["config"]["image_size"]
    ds = open_dataset(f"phantom:{data_dir}", size)
    rows = load_split(run_dir / "split.json", ds.case_ids)["query"]
    ids, masks = load_phantom_masks(data_dir)
    where = {c: i for i, c in enumerate(ids)}
    images = np.stack([ds[int(i)]["img"][0].numpy() for i in rows])
    m = torch.from_numpy(masks[[where[ds.case_ids[int(i)]] for i in rows]]).float()
    m = F.interpolate(m, size=(size, size), mode="nearest").numpy() > 0.5
    names = list(ds.pathologies)
    focal = [names.index(n) for n in ("Mass", "Nodule")]
    out = {}
    selections: list[tuple[str, slice | list[int]]] = [
        ("all findings", slice(None)),
        ("mass + nodule", focal),
        *((f"finding: {n}", [i]) for i, n in enumerate(names)),
    ]
    for key, sel in selections:
        r = pointing_game(model, images, m[:, sel], heatmap=heatmap)
        out[key] = {"hit_rate": r.hit_rate, "chance_rate": r.chance_rate, "n": r.n_images}
    cache.write_text(json.dumps(out, indent=2))
    return out


def pointing_table(runs: dict[tuple[int, int], Path], data_dir: Path) -> str:
    """Markdown: attention-peak hit rate vs chance per run."""
    lines = [
        "| bits | seed | peak on any lesion | chance | peak on mass/nodule | chance |",
        "|---|---|---|---|---|---|",
    ]
    for (bits, seed), run_dir in sorted(runs.items()):
        p = pointing(run_dir, data_dir)
        a, f = p["all findings"], p["mass + nodule"]
        lines.append(
            f"| {bits} | {seed} | {a['hit_rate']:.3f} (n={a['n']}) | {a['chance_rate']:.3f} | "
            f"{f['hit_rate']:.3f} (n={f['n']}) | {f['chance_rate']:.3f} |"
        )
    return "\n".join(lines)


def fmt(values: list[float | None]) -> str:
    """mean ± std over seeds (just the value for one seed); "–" when a seed lacks it
    (an eval.json of an older cxrhash, or a row without codes)."""
    if not values or any(v is None for v in values):
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def table(runs: dict[tuple[int, int], dict], protocol: str, bits_list: list[int]) -> str:
    """Markdown: rows = bits × code type, columns = headline metrics (the distinct-code share
    beside mAP), mean ± std over seeds. Rows no run has (two-stage rows in an older
    eval.json) are left out."""
    titles = [TITLES.get(c, c) for c in COLUMNS]
    lines = ["| bits | codes | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for bits in bits_list:
        seeds = [
            f["eval"]["protocols"][protocol]["rows"]
            for (b, _), f in sorted(runs.items())
            if b == bits
        ]
        for row in ROWS:
            if not any(row in rows for rows in seeds):
                continue
            cells = [fmt([rows.get(row, {}).get(col) for rows in seeds]) for col in COLUMNS]
            lines.append(f"| {bits} | {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


PAIRED_ROWS = ["hash codes", "float upper bound (cosine)", "LSH on features", "random codes"]


Runs = dict[tuple[int, int], dict]


def strict_map(run: dict, row: str) -> float:
    """Strict-protocol mAP of one row of a run's eval.json."""
    return run["eval"]["protocols"]["strict"]["rows"][row]["mAP"]


def paired_table(scratch: Runs, pretrained: Runs, bits_list: list[int]) -> str:
    """Markdown: strict mAP from scratch and from the pretrained backbone, and their per-seed
    difference (mean ± std over seeds; a/n = seeds where the pretrained run is ahead)."""
    lines = [
        "| bits | row | from scratch | from C2L | C2L − scratch (paired by seed) |",
        "|---|---|---|---|---|",
    ]
    for bits in bits_list:
        seeds = sorted(s for (b, s) in scratch if b == bits and (b, s) in pretrained)
        for row in PAIRED_ROWS:
            a = [strict_map(scratch[(bits, s)], row) for s in seeds]
            b = [strict_map(pretrained[(bits, s)], row) for s in seeds]
            diff = np.subtract(b, a)
            ahead = int((diff > 0).sum())
            lines.append(
                f"| {bits} | {row} | {fmt(a)} | {fmt(b)} | {diff.mean():+.4f} ± {diff.std():.4f} "
                f"({ahead}/{len(seeds)}) |"
            )
    return "\n".join(lines)


def cost_table(runs: dict[tuple[int, int], dict]) -> str:
    """Training/evaluation wall time and peak memory per run."""
    lines = [
        "| bits | seed | train s | train img/s | best epoch | eval encode ms/img | "
        "peak MiB (train) | peak MiB (eval) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (bits, seed), f in sorted(runs.items()):
        t, e = f["train"], f["eval"]
        lines.append(
            f"| {bits} | {seed} | {t['train_seconds']:.0f} | {t['images_per_second']:.1f} | "
            f"{t['best_epoch']} | {e['encode_ms_per_image']:.2f} | {t['peak_memory_mb']:.0f} | "
            f"{e['peak_memory_mb']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``sys.argv`` when ``argv`` is None)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--profile", default="cpu-fast")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--phantom-n", type=int, default=1500)
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "results")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    ap.add_argument(
        "--shared-data",
        type=Path,
        default=SHARED,
        help="the folder holding the real films (cxr-dev); without it only phantom rows",
    )
    ap.add_argument(
        "--train-options", default="", help='further `cxrhash train` options, e.g. "--margin 8"'
    )
    ap.add_argument(
        "--pretrained",
        type=Path,
        default=None,
        help="C2L backbone.pt: also train the real-film runs from it, shown beside scratch",
    )
    ap.add_argument(
        "--only",
        choices=["nih", "phantom"],
        default=None,
        help="train and evaluate one dataset's runs only (results.md is not written): "
        "two such processes can share the machine, then a plain run writes the page",
    )
    return ap.parse_args(argv)


def datasets(args: argparse.Namespace) -> dict[str, str]:
    """Section title → data spec: the real films when present, then the phantom films
    (generated on first use)."""
    found: dict[str, str] = {}
    real = args.shared_data / "cxr-dev"
    if real.exists():
        found["cxr-dev (real NIH ChestX-ray14, 1,088 films)"] = f"nih:{real}"
    else:
        print(f"{real} not found: real-data rows are left out", flush=True)
    phantom = args.runs / "phantom-data"
    if not (phantom / "labels.csv").exists():
        cli = [sys.executable, "-m", "cxrhash.cli"]
        run([*cli, "phantom", "--out", str(phantom), "--n", str(args.phantom_n), "--size", "128"])
    found[f"phantom ({args.phantom_n} films, 128 px source)"] = f"phantom:{phantom}"
    return found


def grid(spec: str, prefix: str, options: tuple[str, ...], args: argparse.Namespace) -> Runs:
    """Every bits × seed run of one dataset, in folders ``PREFIX-Bb-sS``."""
    return {
        (bits, seed): one_run(
            spec,
            args.runs / f"{prefix}-{bits}b-s{seed}",
            args.profile,
            bits,
            seed,
            args.epochs,
            options,
        )
        for bits in args.bits
        for seed in args.seeds
    }


def dataset_sections(
    title: str, spec: str, args: argparse.Namespace, extra: tuple[str, ...]
) -> list[str]:
    """Train and evaluate one dataset's grid; its sections of the page."""
    key = "nih" if spec.startswith("nih:") else "phantom"
    runs = grid(spec, key, extra, args)
    sections = [protocol_section(title, spec, runs, args)]
    if key == "nih" and args.pretrained is not None:
        weights = ("--backbone-weights", str(args.pretrained.resolve()))
        c2l = grid(spec, f"{key}-c2l", extra + weights, args)
        shown_weights = str(args.pretrained).replace(str(REPO) + "/", "")
        sections.append(
            "### From scratch and from C2L, side by side (strict protocol, mAP)\n\n"
            f"The same runs started from the C2L backbone `{shown_weights}` "
            "(`--backbone-weights`): same split, seed and schedule per row.\n\n"
            f"{paired_table(runs, c2l, args.bits)}\n"
        )
    if key == "phantom":
        dirs = {(b, s): args.runs / f"{key}-{b}b-s{s}" for b in args.bits for s in args.seeds}
        sections.append(
            "### Does the attention look at the lesion? (pointing game on the query films)\n\n"
            "Hit = the maximum of the up-sampled attention map M lies inside a lesion mask; "
            "chance = the mean fraction of the film the masks cover.\n\n"
            f"{pointing_table(dirs, args.runs / 'phantom-data')}\n"
        )
    return sections


def protocol_section(title: str, spec: str, runs: Runs, args: argparse.Namespace) -> str:
    """A dataset's tables: both protocols, then the cost."""
    any_run = next(iter(runs.values()))["eval"]["protocols"]
    sizes = {p: (v["n_query"], v["n_database"]) for p, v in any_run.items()}
    shown = spec.replace(str(REPO) + "/", "").replace(str(REPO.parent), "..")
    return (
        f"## {title}\n\n"
        f"Data spec `{shown}`; profile `{args.profile}`; "
        f"seeds {args.seeds} (mean ± std over seeds; each seed draws its own "
        "patient-disjoint split, initialisation and batch order).\n\n"
        f"### Literature protocol (queries unseen; database = training images; "
        f"{sizes['literature'][0]} queries × {sizes['literature'][1]})\n\n"
        f"{table(runs, 'literature', args.bits)}\n\n"
        f"### Strict protocol (queries and database unseen, patient-disjoint from training; "
        f"{sizes['strict'][0]} queries × {sizes['strict'][1]})\n\n"
        f"{table(runs, 'strict', args.bits)}\n\n"
        f"### Cost\n\n{cost_table(runs)}\n"
    )


def page_header(args: argparse.Namespace, extra: tuple[str, ...]) -> str:
    """The page's title and how to read its rows."""
    return (
        "# Results: attention-fusion on real and phantom chest radiographs\n\n"
        "Produced by `python benchmarks/results.py` (this file is written by it; the runs "
        f"live in `{args.runs.relative_to(REPO) if args.runs.is_relative_to(REPO) else args.runs}`"
        "). Every run: `cxrhash train --profile "
        f"{args.profile} --bits B --seed S{' ' + args.train_options if extra else ''}` then "
        "`cxrhash eval RUN --json`.\n\n"
        "Rows: **hash codes** = the learned k-bit codes ranked by Hamming distance (ties by "
        "database order); **two-stage** = the 1,000 Hamming-nearest re-ranked by the query's "
        "float outputs against the database codes (**asymmetric**, ⟨f_q, b⟩) or against the "
        "database's float16 outputs (**stored floats**, cosine), the rest after them in Hamming "
        "order; **float upper bound** = the same network's pre-hash embedding ranked "
        "by cosine; **LSH on features** = k-bit random-hyperplane LSH of that embedding; "
        "**random codes** = uniformly random k-bit codes (chance level, mean of 5 draws). "
        "**distinct share** = distinct database codes / database films (a collapsed model has "
        "few; `–` for rows without codes and for runs evaluated before it was recorded). "
        "Relevance: sharing at least one finding, `No Finding` counted as a class (SPEC §6). "
        "Model selection: validation split only (its images query a fixed sample of "
        "training images; mAP@100). The discussion below comes from `docs/results-notes.md`; "
        "the tables are regenerated on every run.\n\n"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the grid and write docs/results.md."""
    args = parse_args(argv)
    extra = tuple(shlex.split(args.train_options))
    sections = []
    for title, spec in datasets(args).items():
        key = "nih" if spec.startswith("nih:") else "phantom"
        if args.only is None or key == args.only:
            sections += dataset_sections(title, spec, args, extra)
    if args.only is not None:
        print(f"{args.only}: runs done; run without --only to write {args.out}")
        return
    notes = args.out.with_name("results-notes.md")
    reading = notes.read_text() + "\n" if notes.exists() else ""
    args.out.write_text(page_header(args, extra) + reading + "\n".join(sections))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
