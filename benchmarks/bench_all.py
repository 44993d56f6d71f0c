"""The full bench of docs/benchmarks.md: C2L pretraining, then `cxrhash bench` on phantom + NIH.

Steps (each skipped or resumed when already done, so re-running continues):

1. ``cxrhash pretrain --method c2l`` on ``../shared/data/cxr-unlabeled`` (ResNet-18, 64 px);
2. a 1,000-film phantom dataset (``cxrhash phantom``);
3. ``cxrhash bench`` on the phantom films and on ``../shared/data/cxr-dev`` (default grid:
   10 deep methods × {16, 32, 64} bits × 3 seeds, 4 shallow baselines, ablations, C2L vs scratch),
   then, from scratch on 1,500 phantom films (``runs/results/phantom-data``, shared with
   ``benchmarks/results.py``), the ten deep methods with the longer ``cpu-fast`` budget
   (12 epochs, 64 px) at 32 and 64 bits, and attention-fusion and HashNet with the ``cpu``
   profile (128 px) at 32 and 64 bits (issue #10's acceptance setting);
4. ``docs/benchmarks.md`` = ``docs/benchmarks-notes.md`` (the discussion) followed by both reports,
   with their figures copied to ``docs/benchmarks/``.

    python benchmarks/bench_all.py                      # everything
    python benchmarks/bench_all.py --only phantom       # one bench
    python benchmarks/bench_all.py --doc-only           # rebuild the document from finished reports
    python benchmarks/bench_all.py --save-progress      # commit-able copy of the finished cells

A bench longer than one sitting carries over to another machine or a clean checkout through
``benchmarks/progress/NAME/`` (its ``bench.json``, the per-seed splits and the finished
cells' result JSONs; no weights): ``--save-progress`` copies them there (safe while the bench
runs), and every bench first restores whatever its run folder lacks from there, so the
finished cells are skipped. Only benches on synthetic (phantom) films are carried:
``PROGRESS_BENCHES``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RUNS = REPO / "runs" / "bench"
DOCS = REPO / "docs"
PROGRESS = REPO / "benchmarks" / "progress"
# Benches whose finished cells may be committed (phantom films only: their splits list
# synthetic case ids, never a real film's).
PROGRESS_BENCHES = ("phantom", "phantom-12-epochs", "phantom-cpu128")


def run(cmd: list[str]) -> None:
    """Echo and run a command; fail loudly."""
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def cli(*args: str) -> list[str]:
    """A ``cxrhash`` command line run with this interpreter."""
    return [sys.executable, "-m", "cxrhash.cli", *args]


# Benches beyond the default grid, from scratch on the 1,500 phantom films of results.py:
# the longer budget of the `cpu-fast` profile (12 epochs, lr step at 8) for the ten deep
# methods, and the `cpu` profile (128 px) for attention-fusion and the strongest baseline.
LONGER_BUDGET = [
    "--profile", "cpu-fast", "--shallow", "", "--bits", "32,64", "--no-ablations",
]  # fmt: skip
CPU_128PX = [
    "--profile", "cpu", "--methods", "attention-fusion,hashnet", "--shallow", "",
    "--bits", "64,32", "--no-ablations",
]  # fmt: skip
PHANTOM_1500 = REPO / "runs" / "results" / "phantom-data"


def benches() -> dict[str, tuple[str, list[str], bool]]:
    """Bench name → (dataset spec, extra ``cxrhash bench`` arguments, C2L-initialised), in
    document order (the real films only when ../shared/data is present)."""
    phantom = f"phantom:{RUNS / 'phantom-data'}"
    out = {"phantom": (phantom, [], True)}
    if (SHARED / "cxr-dev").exists():
        out["cxr-dev"] = (f"nih:{SHARED / 'cxr-dev'}", [], True)
    else:
        print(f"{SHARED / 'cxr-dev'} not found: the real-data bench is left out", flush=True)
    out["phantom-12-epochs"] = (f"phantom:{PHANTOM_1500}", LONGER_BUDGET, False)
    out["phantom-cpu128"] = (f"phantom:{PHANTOM_1500}", CPU_128PX, False)
    return out


def pretrain(epochs: int) -> Path | None:
    """Run (or resume) C2L pretraining; None when the unlabelled films are absent."""
    out = RUNS / "c2l"
    weights = out / "backbone.pt"
    if weights.exists():
        return weights
    if not (SHARED / "cxr-unlabeled").exists():
        print("no ../shared/data/cxr-unlabeled: benches run without C2L", flush=True)
        return None
    args = ["pretrain", "--method", "c2l", "--data", str(SHARED / "cxr-unlabeled")]
    args += ["--out", str(out), "--backbone", "resnet18", "--image-size", "64"]
    # ~750 steps: a faster key encoder and milder views (docs/recipes.md, "C2L: why it did
    # not learn"); the C2L defaults keep MoCo's m = 0.999 and the full views for long runs.
    args += ["--momentum", "0.99", "--augment-strength", "0.5"]
    args += ["--epochs", str(epochs), "--quiet"]
    if (out / "last.pt").exists():
        args.append("--resume")
    run(cli(*args))
    return weights


def _carried_files(root: Path) -> list[Path]:
    """The files of a bench folder that carry its progress, relative to ``root``."""
    found = [Path("bench.json")] if (root / "bench.json").is_file() else []
    found += [p.relative_to(root) for p in sorted((root / "splits").glob("seed*.json"))]
    found += [p.relative_to(root) for p in sorted((root / "cells").glob("*.json"))]
    return found


def save_progress(name: str) -> int:
    """Copy bench ``name``'s finished cells (and its settings and splits) to
    ``benchmarks/progress/NAME``; returns how many cells it holds."""
    src, dst = RUNS / name, PROGRESS / name
    files = _carried_files(src)
    for rel in files:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    return sum(rel.parts[0] == "cells" for rel in files)


def restore_progress(name: str) -> int:
    """Copy into bench ``name``'s run folder what ``benchmarks/progress/NAME`` holds and the
    folder lacks; returns how many cells were restored."""
    src, dst = PROGRESS / name, RUNS / name
    restored = 0
    for rel in _carried_files(src):
        if not (dst / rel).exists():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dst / rel)
            restored += rel.parts[0] == "cells"
    return restored


def _demote_headings(text: str) -> str:
    return re.sub(r"^(#+)", r"#\1", text, flags=re.MULTILINE)


def _previous_sections(doc: Path) -> dict[str, str]:
    """The ``## Bench: NAME`` sections of an earlier document, so a bench whose run folder is
    gone (another machine, a cleaned tree) keeps its published tables."""
    if not doc.exists():
        return {}
    found = {}
    pieces = re.split(r"^(?=## Bench: )", doc.read_text(), flags=re.MULTILINE)
    for piece in pieces[1:]:
        name = piece.split("\n", 1)[0].removeprefix("## Bench: ").strip()
        piece = re.sub(r"\n## [\w-]+\n\nNot run yet\.\n*$", "\n", piece)
        piece = re.sub(r"\n## Benches not run yet\n.*$", "\n", piece, flags=re.DOTALL)
        found[name] = "\n" + piece.rstrip() + "\n"
    return found


def write_doc(names: list[str]) -> None:
    """docs/benchmarks.md from the notes and each finished report (figures copied beside it)."""
    parts = [(DOCS / "benchmarks-notes.md").read_text().rstrip() + "\n"]
    fig_dir = DOCS / "benchmarks"
    previous = _previous_sections(DOCS / "benchmarks.md")
    pending = []
    for name in names:
        report = RUNS / name / "report" / "report.md"
        if not report.exists():
            if name in previous:
                parts.append(previous[name])
            else:
                pending.append(name)
            continue
        target = fig_dir / name
        target.mkdir(parents=True, exist_ok=True)
        for png in report.parent.glob("*.png"):
            shutil.copyfile(png, target / png.name)
        text = _demote_headings(report.read_text())
        text = re.sub(r"\]\(([^)/]+\.png)\)", rf"](benchmarks/{name}/\1)", text)
        parts.append(f"\n## Bench: {name}\n\n" + text)
    if pending:
        runs = ", ".join(f"`python benchmarks/bench_all.py --only {n}`" for n in pending)
        parts.append(f"\n## Benches not run yet\n\n{', '.join(pending)}: {runs}.\n")
    (DOCS / "benchmarks.md").write_text("\n".join(parts))
    print(f"wrote {DOCS / 'benchmarks.md'}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the benches (or only rebuild the document, or save their progress)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", choices=["phantom", "cxr-dev", "phantom-12-epochs", "phantom-cpu128"])
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--doc-only", action="store_true")
    ap.add_argument(
        "--save-progress",
        action="store_true",
        help="copy the finished cells to benchmarks/progress/ (to commit) and exit",
    )
    args = ap.parse_args(argv)
    specs = benches()
    names = [n for n in specs if args.only in (None, n)]
    if args.save_progress:
        for name in names:
            if name in PROGRESS_BENCHES and (RUNS / name).is_dir():
                print(f"{name}: {save_progress(name)} finished cells in {PROGRESS / name}")
        return
    if not args.doc_only:
        needs_c2l = any(specs[n][2] for n in names)
        weights = pretrain(args.pretrain_epochs) if needs_c2l else None
        if not (RUNS / "phantom-data" / "labels.csv").exists():
            run(cli("phantom", "--out", str(RUNS / "phantom-data"), "--n", "1000", "--size", "128"))
        if not (PHANTOM_1500 / "labels.csv").exists():
            run(cli("phantom", "--out", str(PHANTOM_1500), "--n", "1500", "--size", "128"))
        for name in names:
            t0 = time.perf_counter()
            data, extra, use_c2l = specs[name]
            if name in PROGRESS_BENCHES and (restored := restore_progress(name)):
                print(f"{name}: {restored} finished cells restored from {PROGRESS / name}")
            cmd = ["bench", "--data", data, "--out", str(RUNS / name), *extra]
            cmd += ["--jobs", str(args.jobs)]
            if weights is not None and use_c2l:
                cmd += ["--pretrained", str(weights)]
            run(cli(*cmd))
            print(f"{name}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    write_doc(list(specs))


if __name__ == "__main__":
    main()
