"""How often "no close match in this archive" fires: on held-out films of the index's own
kind, on films of another kind, and on noise (issue #13 item 2; writes docs/closeness.md).

For each kind of film (phantom, and the real NIH films of ../shared/data/cxr-dev when
present) a trained run (``--phantom-run`` / ``--real-run``, or one trained here with
``--profile``) indexes the ``train`` and ``database`` parts of its split with
``build_index``, which calibrates the index. The queries are searched with
``search_decoded`` (the path of ``cxrhash search`` and the server):

* held out: the ``query`` and ``val`` parts of the split (patients not in the index);
* the other kind: up to ``--other-n`` films of the other dataset (seeded);
* inputs that are no radiograph: ``--noise-n`` films of uniform noise, 21 constant images
  (0, 0.05, …, 1) and ``--noise-n`` random textures (1/f^β noise, β in 1.5 … 3; seeded).

Per set: how often the verdict fires (the Mahalanobis distance of the backbone-map
statistics or of the pixel statistics above the archive's 99.5th percentile), how often
each of the two alone would, and how often the two code-side figures alone would (cosine
distance of the float hash outputs, Hamming distance of the codes, to the nearest film of
the calibration sample, above the archive's 99.5th percentile).

    python benchmarks/closeness.py --phantom-run runs/results/phantom-32b-s0 \\
        --real-run runs/results/nih-32b-s0
    python benchmarks/closeness.py --profile test --epochs 1 --phantom-n 100 --out /tmp/c.md
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cxrhash.config import make_config
from cxrhash.data.dataset import CXRDataset
from cxrhash.data.phantom import write_phantom_dataset
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import load_split
from cxrhash.encode import make_loader
from cxrhash.index.store import HashIndex
from cxrhash.retrieve import build_index, search_decoded
from cxrhash.training.checkpoint import load_model
from cxrhash.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
KIND_TITLES = {"phantom": "phantom films", "nih": "real NIH films (cxr-dev)"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``sys.argv`` when ``argv`` is None)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom-run", type=Path, nargs="+", default=[], help="trained phantom runs")
    ap.add_argument("--real-run", type=Path, nargs="+", default=[], help="trained cxr-dev runs")
    ap.add_argument("--profile", default="cpu-fast", help="profile of runs trained here")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--phantom-n", type=int, default=1500, help="phantom films generated")
    ap.add_argument("--other-n", type=int, default=400)
    ap.add_argument("--noise-n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="folder for data, runs, indexes")
    ap.add_argument("--shared-data", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "closeness.md")
    return ap.parse_args(argv)


def run_config(run: Path) -> dict:
    """The training config a run recorded."""
    return json.loads((run / "config.json").read_text())


def trained_run(spec: str, work: Path, name: str, args: argparse.Namespace) -> Path:
    """A run of ``args.profile`` on ``spec`` in ``work/name`` (trained unless finished)."""
    run = work / name
    if not (run / "best.pt").exists():
        config = make_config(args.profile, data=spec, epochs=args.epochs, seed=args.seed)
        train(config, run, progress=False)
    return run


def films(dataset: CXRDataset, size: int) -> list[np.ndarray]:
    """The readable films of ``dataset`` at ``size``² as S×S float arrays."""
    out: list[np.ndarray] = []
    for batch in make_loader(dataset.with_image_size(size, augment=False), 64):
        if batch["img"] is not None:
            out.extend(batch["img"][:, 0].numpy())
    return out


def textures(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` random textures: 1/f^β noise (β uniform in 1.5 … 3) stretched to [0, 1]."""
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    f = np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / size)
    out = []
    for _ in range(n):
        spec = rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)
        img = np.fft.irfft2(spec / f ** (rng.uniform(1.5, 3.0) / 2), s=(size, size))
        out.append(((img - img.min()) / (np.ptp(img) + 1e-9)).astype(np.float32))
    return out


def no_radiographs(n: int, size: int, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """The query sets that are plainly no radiograph: noise, blanks, textures."""
    return {
        "uniform noise": list(rng.random((n, size, size), dtype=np.float32)),
        "constant images": [np.full((size, size), v, np.float32) for v in np.linspace(0, 1, 21)],
        "random textures": textures(n, size, rng),
    }


def fire_rates(model: torch.nn.Module, index: HashIndex, queries: list[np.ndarray]) -> dict:
    """How often each criterion fires over ``queries`` (searched 32 at a time)."""
    found = []
    for start in range(0, len(queries), 32):
        found.extend(search_decoded(model, index, queries[start : start + 32], k=1).closeness)
    if any(c is None for c in found):
        raise RuntimeError("the index was not calibrated")
    return {
        "n": len(found),
        "verdict": np.mean([not c.close for c in found]),
        "maps": np.mean([c.mahalanobis > c.mahalanobis_limit for c in found]),
        "pixels": np.mean([c.pixel_distance > c.pixel_limit for c in found]),
        "cosine": np.mean([c.cosine > c.cosine_limit for c in found]),
        "hamming": np.mean([c.hamming > c.hamming_limit for c in found]),
        "hamming0": np.mean([c.hamming == 0 for c in found]),
    }


def measure_kind(
    kind: str, run: Path, specs: dict[str, str], work: Path, args: argparse.Namespace
) -> dict:
    """Index a run's train + database films, then the fire rates of each query set."""
    model, payload = load_model(run / "best.pt")
    size = int(payload["config"]["image_size"])
    own = open_dataset(specs[kind], size)
    split = load_split(run / "split.json", own.case_ids)
    archive = np.concatenate([split["train"], split["database"]])
    t0 = time.perf_counter()
    index_dir = work / f"index-{kind}-{run.name}"
    build_index(run / "best.pt", own.subset(archive), index_dir, progress=False)
    seconds = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    sets = {"held-out films of the same kind": own.subset(np.sort(np.concatenate(
        [split["query"], split["val"]])))}  # fmt: skip
    for other, spec in specs.items():
        if other != kind:
            ds = open_dataset(spec, size)
            pick = np.sort(rng.choice(len(ds), min(args.other_n, len(ds)), replace=False))
            sets[KIND_TITLES[other]] = ds.subset(pick)
    queries = {name: films(ds, size) for name, ds in sets.items()}
    queries.update(no_radiographs(args.noise_n, size, rng))
    with HashIndex.open(index_dir) as index:
        n_index = len(index)
        rates = {name: fire_rates(model, index, q) for name, q in queries.items()}
    return {
        "kind": kind,
        "run": run,
        "size": size,
        "n_index": n_index,
        "build_s": seconds,
        "rates": rates,
    }


def page(results: list[dict], args: argparse.Namespace, command: str) -> str:
    """docs/closeness.md: the design, then one table per index kind."""
    lines = [
        '# Honest similarity: how often "no close match in this archive" fires',
        "",
        "Generated by `benchmarks/closeness.py` (do not edit by hand); "
        f"{platform.machine()}, torch {torch.__version__}, seed {args.seed}. The design and "
        'the alternatives measured: docs/design.md, "Closeness calibration".',
        "",
        f"Command: `python benchmarks/closeness.py {command}`",
        "",
        "Each index is built by `build_index`, which keeps a seeded sample of ≤ 4096 of its "
        "films in `calibration.npz`. A query fires when the Mahalanobis distance of its "
        "backbone feature-map statistics (channel means and standard deviations) or that of "
        "its pixel statistics (intensity histogram, gradient and Laplacian quantiles), each "
        "under a Ledoit–Wolf covariance, exceeds the 99.5th percentile of the archive's own "
        "films (scored out of sample: five folds, a query by the mean of their fits); the "
        "next two columns say how often each alone fires. The two after them say how often "
        "the code-side figures alone would fire at their own 99.5th percentiles: the cosine "
        "distance of the float hash outputs and the Hamming distance of the codes to the "
        "nearest sampled film; the last column is the share of queries whose nearest sampled "
        "code is at Hamming distance 0.",
    ]
    for r in results:
        cfg = run_config(r["run"])
        lines += [
            "",
            f"## Index of {KIND_TITLES[r['kind']]}, model `{r['run'].name}`",
            "",
            f"({cfg['method']}, {cfg['backbone']}, {r['size']} px, "
            f"{cfg['bits']} bits, {cfg['epochs']} epochs); the index holds {r['n_index']} "
            f"films (train + database parts), built and calibrated in {r['build_s']:.1f} s.",
            "",
            "| queries | films | fires (verdict) | map statistics alone | pixel statistics alone "
            "| hash-output cosine alone | Hamming alone | nearest code at distance 0 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, x in r["rates"].items():
            lines.append(
                f"| {name} | {x['n']} | {x['verdict']:.3f} | {x['maps']:.3f} | "
                f"{x['pixels']:.3f} | {x['cosine']:.3f} | "
                f"{x['hamming']:.3f} | {x['hamming0']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Measure every index kind available and write the page."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs: list[tuple[str, Path]] = []
        phantom = work / "phantom-data"
        if args.phantom_run:
            phantom = Path(run_config(args.phantom_run[0])["data"].removeprefix("phantom:"))
        elif not (phantom / "labels.csv").exists():
            write_phantom_dataset(phantom, args.phantom_n, 128, seed=args.seed)
        specs = {"phantom": f"phantom:{phantom}"}
        real = args.shared_data / "cxr-dev"
        if args.real_run:
            specs["nih"] = run_config(args.real_run[0])["data"]
        elif real.is_dir():
            specs["nih"] = f"nih:{real}"
        else:
            print(f"{real} not found: no real-film rows", file=sys.stderr)
        for kind, given in (("phantom", args.phantom_run), ("nih", args.real_run)):
            if kind in specs:
                for run in given or [trained_run(specs[kind], work, f"run-{kind}", args)]:
                    runs.append((kind, run))
        results = [measure_kind(kind, run, specs, work, args) for kind, run in runs]
    shown = sys.argv[1:] if argv is None else argv
    text = page(results, args, " ".join(shown).replace(str(REPO) + "/", ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
