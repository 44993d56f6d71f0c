"""Which hash layer keeps attention-fusion stable without costing retrieval quality (issue #9).

Two measurements per candidate activation of the hash layer (``models.hash_head``):

* **stability** — the training step loop of the trainer (same model, loss,
  optimiser, split, batch order and augmentation, no validation) for a fixed
  number of steps; a cell *diverges* at the first step whose loss is non-finite
  or more than 100× the first step's loss. Settings: the natural CPU profiles
  (``cpu``: 128 px, ``cpu-fast``: 64 px; SGD lr 0.01, momentum 0.9, batch 32,
  64 bits, margins √k and √(2k)) and provoked ones (a larger learning rate, the
  hash layer's initial weights × s).
* **quality** — ``cxrhash train`` (``cpu-fast`` profile, 12 epochs) then the
  strict evaluation protocol: mAP of the Hamming ranking of the codes, mAP of the
  float embedding (cosine), the share of distinct codes among the database
  films, and the validation mAP@100 of the selected epoch.

Every cell is stored in ``OUT/results.json`` as soon as it finishes, so a re-run
skips finished cells (an interrupted training run resumes from its ``last.pt``).
``docs/hash_layer.md`` is rewritten from the JSON at the end of every run
(``--report-only`` just rewrites it).

    PYTHONPATH=src python benchmarks/hash_layer.py --out /work/scratch/hl/bench
    PYTHONPATH=src python benchmarks/hash_layer.py --out DIR --only stability
    PYTHONPATH=src python benchmarks/hash_layer.py --out DIR --only quality --bits 64 32
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrhash.config import make_config
from cxrhash.data.dataset import CXRDataset
from cxrhash.data.labels import label_names, with_no_finding
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import load_split, patient_disjoint_split
from cxrhash.encode import encode_dataset, make_loader
from cxrhash.methods import METHODS, EpochInfo
from cxrhash.models.hash_head import HashLayer
from cxrhash.training.checkpoint import load_model
from cxrhash.training.engine import build_optimizer, seed_everything
from cxrhash.training.trainer import TrainingError, engine_settings, train

REPO = Path(__file__).resolve().parents[1]
PHANTOM = "phantom:/work/scratch/phantom3k"
CANDIDATES = ("identity", "normalize", "ball", "ball2", "tanh-continuation", "tanh", "batchnorm")
SEEDS = (0, 1, 2)
BLOWUP = 100.0  # a loss above BLOWUP × the first step's loss counts as diverged


@dataclass(frozen=True)
class Setting:
    """One stability setting: profile, data and the provocation (lr, initial output scale)."""

    name: str
    data: str
    profile: str
    steps: int
    lr: float = 0.01
    init_scale: float = 1.0
    margin: float | None = None
    bits: int = 64
    seeds: tuple[int, ...] = SEEDS
    note: str = ""


MULTI = "phantom:/work/scratch/hl/phantom-multi"  # 3,100 films, p_normal 0.1, ≤ 6 findings

SETTINGS: tuple[Setting, ...] = (
    Setting("provoked-64px-lr0.02", PHANTOM, "cpu-fast", 60, lr=0.02,
            note="reproduction (the slow test): twice the profile's learning rate"),
    Setting("provoked-64px-x10", PHANTOM, "cpu-fast", 60, init_scale=10.0,
            note="hash-layer weights and bias ×10 at initialisation"),
    Setting("provoked-64px-x3", PHANTOM, "cpu-fast", 60, init_scale=3.0,
            note="hash-layer weights and bias ×3: the profile's own lr"),
    Setting("natural-cpu-fast-m11.31", PHANTOM, "cpu-fast", 150, margin=11.31,
            note="the user's second command (m = √(2k))"),
    Setting("provoked-128px-lr0.02", PHANTOM, "cpu", 60, lr=0.02, seeds=(0,),
            note="cpu profile, twice its learning rate"),
    Setting("natural-cpu", PHANTOM, "cpu", 150, seeds=(0,), note="the user's first command"),
    Setting("natural-cpu-fast-multi-m11.31", MULTI, "cpu-fast", 150, margin=11.31,
            seeds=(0,), note="multi-finding phantom (90 % abnormal, up to 6 findings)"),
)  # fmt: skip


# ---------------------------------------------------------------------------- stability

_DATASETS: dict[tuple[str, int], CXRDataset] = {}


def _dataset(spec: str, size: int) -> CXRDataset:
    if (spec, size) not in _DATASETS:
        _DATASETS[(spec, size)] = open_dataset(spec, size).with_image_size(size, augment=False)
    return _DATASETS[(spec, size)]


def step_losses(
    setting: Setting, activation: str, seed: int, *, record_every: int = 1
) -> dict[str, Any]:
    """Run the trainer's step loop for ``setting``; stop at the first diverged step.

    Returns ``diverged``, ``step`` (0-based index of the diverged step or None),
    ``first``/``last``/``max`` loss, ``steps`` run and the per-step losses.
    """
    cfg = make_config(
        setting.profile,
        data=setting.data,
        bits=setting.bits,
        margin=setting.margin,
        seed=seed,
        lr=setting.lr,
        hash_activation=activation,
    )
    ds = _dataset(setting.data, cfg.image_size)
    split = patient_disjoint_split(ds.patient_ids, cfg.split_fractions, seed)
    train_set = ds.subset(split["train"]).with_image_size(cfg.image_size, augment=True)
    names = label_names(ds.pathologies, cfg.no_finding_class)
    method = METHODS.get(cfg.method)
    seed_everything(seed)
    model = method.build_model(cfg, len(names))
    scale_hash_layer(model, setting.init_scale)
    optimizer = build_optimizer(engine_settings(cfg), model)
    losses: list[float] = []
    diverged_at: int | None = None
    epoch = 0
    t0 = time.perf_counter()
    while len(losses) < setting.steps and diverged_at is None:
        seed_everything(seed * 1000 + epoch)
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        loader = make_loader(
            train_set, cfg.batch_size, 0, shuffle=True, generator=gen, drop_last=True
        )
        if method.on_epoch is not None:
            method.on_epoch(model, EpochInfo(epoch, cfg.epochs, len(loader)), cfg)
        model.train()
        for batch in loader:
            out = model(batch["img"])
            loss, _ = method.loss(out, with_no_finding(batch["lab"], cfg.no_finding_class), cfg)
            value = float(loss.detach())
            losses.append(value)
            if not math.isfinite(value) or value > BLOWUP * losses[0]:
                diverged_at = len(losses) - 1
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if len(losses) >= setting.steps:
                break
        epoch += 1
    finite = [v for v in losses if math.isfinite(v)]
    return {
        "diverged": diverged_at is not None,
        "step": diverged_at,
        "first": losses[0],
        "last": losses[-1],
        "max": max(finite) if finite else None,
        "steps": len(losses),
        "seconds": time.perf_counter() - t0,
        "losses": losses[::record_every],
    }


def scale_hash_layer(model: torch.nn.Module, factor: float) -> None:
    """Multiply every hash layer's weight and bias by ``factor`` (the provoked initial scale)."""
    if factor == 1.0:
        return
    layers = [m for m in model.modules() if isinstance(m, HashLayer)]
    if not layers:
        raise TypeError(f"{type(model).__name__} has no HashLayer")
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(factor)
            layer.bias.mul_(factor)


# ---------------------------------------------------------------------------- quality


def quality_cell(
    out: Path, activation: str, bits: int, seed: int, epochs: int | None = None
) -> dict[str, Any]:
    """Train ``cpu-fast`` on phantom3k and evaluate (strict protocol); resumes a killed run.

    ``epochs`` overrides the profile's 12 (``None`` keeps them).
    """
    from cxrhash.training.evaluate_run import evaluate_run

    run_dir = out / "runs" / f"{activation}-b{bits}-s{seed}"
    summary = run_dir / "train_summary.json"
    record: dict[str, Any] = {"run": str(run_dir)}
    if not summary.exists():
        cfg = make_config(
            "cpu-fast",
            data=PHANTOM,
            bits=bits,
            seed=seed,
            hash_activation=activation,
            epochs=epochs,
        )
        try:
            train(cfg, run_dir, resume=(run_dir / "last.pt").exists(), progress=False)
        except TrainingError as exc:
            return {**record, "diverged": True, "error": str(exc)}
    train_facts = json.loads(summary.read_text())
    history = json.loads((run_dir / "history.json").read_text())
    results, _ = evaluate_run(run_dir, protocols=("strict",), progress=False)
    rows = results[0].rows
    model, payload = load_model(run_dir)
    ds = open_dataset(PHANTOM, payload["config"]["image_size"])
    split = load_split(run_dir / "split.json", ds.case_ids)
    enc = encode_dataset(model, ds.subset(split["database"]), batch_size=64, progress=False)
    distinct = len(np.unique(enc.codes, axis=0)) / len(enc.codes)
    return {
        **record,
        "diverged": False,
        "hash_mAP": rows["hash codes"]["mAP"],
        "float_mAP": rows["float upper bound (cosine)"]["mAP"],
        "lsh_mAP": rows["LSH on features"]["mAP"],
        "random_mAP": rows["random codes"]["mAP"],
        "hash_nDCG@100": rows["hash codes"]["nDCG@100"],
        "distinct_share": distinct,
        "val_mAP@100": train_facts["best_score"],
        "best_epoch": train_facts["best_epoch"],
        "train_seconds": train_facts["train_seconds"],
        "final_loss": history[-1].get("loss_total"),
    }


# ---------------------------------------------------------------------------- driver


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """``results.json`` (``{"stability": {...}, "quality": {...}}``), empty when missing."""
    if path.exists():
        data: dict[str, dict[str, Any]] = json.loads(path.read_text())
        return data
    return {"stability": {}, "quality": {}}


def save_results(path: Path, results: dict[str, dict[str, Any]]) -> None:
    """Write atomically so a kill mid-write keeps the previous file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def run_stability(
    out: Path, results: dict[str, dict[str, Any]], settings: list[Setting], candidates: list[str]
) -> None:
    """Every setting × candidate × seed not yet in ``results``."""
    for setting in settings:
        for act in candidates:
            for seed in setting.seeds:
                key = f"{setting.name}|{act}|{seed}"
                if key in results["stability"]:
                    continue
                r = step_losses(setting, act, seed)
                results["stability"][key] = r
                save_results(out / "results.json", results)
                print(
                    f"[stability] {key}: diverged={r['diverged']} step={r['step']} "
                    f"first={r['first']:.3g} last={r['last']:.3g} max={r['max']} "
                    f"({r['seconds']:.0f} s)",
                    flush=True,
                )


def run_quality(
    out: Path,
    results: dict[str, dict[str, Any]],
    bits_list: list[int],
    candidates: list[str],
    epochs: int | None = None,
) -> None:
    """Every bits × seed × candidate not yet in ``results`` (seed-major, so seeds fill evenly)."""
    for bits in bits_list:
        for seed in SEEDS:
            for act in candidates:
                key = f"{act}|{bits}|{seed}"
                if key in results["quality"]:
                    continue
                t0 = time.perf_counter()
                r = quality_cell(out, act, bits, seed, epochs)
                r["cell_seconds"] = time.perf_counter() - t0
                results["quality"][key] = r
                save_results(out / "results.json", results)
                shown = {k: v for k, v in r.items() if k != "run"}
                print(f"[quality] {key}: {shown}", flush=True)


# ---------------------------------------------------------------------------- report


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def stability_table(results: dict[str, dict[str, Any]], candidates: list[str]) -> list[str]:
    """Per setting × candidate: diverged seeds, divergence steps, last loss."""
    lines = [
        "| setting | activation | diverged (of seeds) | step of divergence "
        "| loss: first → last (mean) |",
        "|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        for act in candidates:
            cells = [results["stability"].get(f"{setting.name}|{act}|{s}") for s in setting.seeds]
            done = [c for c in cells if c is not None]
            if not done:
                continue
            div = [c for c in done if c["diverged"]]
            steps = ", ".join(str(c["step"]) for c in div) or "–"
            ok = [c for c in done if not c["diverged"]]
            first = np.mean([c["first"] for c in done])
            last = f"{np.mean([c['last'] for c in ok]):.3g}" if ok else "diverged"
            lines.append(
                f"| {setting.name} | {act} | {len(div)}/{len(done)} | {steps} | "
                f"{first:.3g} → {last} |"
            )
    return lines


QUALITY_COLUMNS = (
    ("hash_mAP", "strict mAP (codes)"),
    ("float_mAP", "strict mAP (float)"),
    ("distinct_share", "distinct codes"),
    ("val_mAP@100", "val mAP@100 (best epoch)"),
)


def quality_table(
    results: dict[str, dict[str, Any]], candidates: list[str], bits_list: list[int]
) -> list[str]:
    """Mean ± std over seeds and the paired difference of code mAP vs identity."""
    head = " | ".join(label for _, label in QUALITY_COLUMNS)
    lines = [
        f"| bits | activation | seeds | {head} | Δ code mAP vs identity (paired) | diverged |",
        "|---|---|---|" + "---|" * len(QUALITY_COLUMNS) + "---|---|",
    ]
    for bits in bits_list:
        for act in candidates:
            runs = {s: results["quality"].get(f"{act}|{bits}|{s}") for s in SEEDS}
            runs = {s: r for s, r in runs.items() if r is not None}
            if not runs:
                continue
            ok = {s: r for s, r in runs.items() if not r["diverged"]}
            cols = [_ms([r[k] for r in ok.values()]) for k, _ in QUALITY_COLUMNS]
            diffs = []
            for s, r in ok.items():
                base = results["quality"].get(f"identity|{bits}|{s}")
                if base is not None and not base["diverged"]:
                    diffs.append(r["hash_mAP"] - base["hash_mAP"])
            delta = "–" if act == "identity" else _signed(diffs)
            n_div = len(runs) - len(ok)
            lines.append(
                f"| {bits} | {act} | {len(runs)} | " + " | ".join(cols) + f" | {delta} | {n_div} |"
            )
    return lines


def _signed(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:+.3f}"
    return f"{np.mean(values):+.3f} ± {np.std(values, ddof=1):.3f} (n={len(values)})"


def write_report(results: dict[str, dict[str, Any]], path: Path, bits_list: list[int]) -> str:
    """Write ``docs/hash_layer.md``: tables from the JSON, notes from ``hash_layer-notes.md``."""
    candidates = list(CANDIDATES)
    notes_path = path.with_name("hash_layer-notes.md")
    notes = notes_path.read_text().strip() if notes_path.exists() else ""
    settings = [
        f"| {s.name} | {s.profile} | {s.data.split('/')[-1]} | {list(s.seeds)} | {s.steps} | "
        f"{s.lr} | {s.init_scale} | {'√k' if s.margin is None else s.margin} | {s.note} |"
        for s in SETTINGS
    ]
    parts = [
        "# The hash layer of attention-fusion: stability and quality by activation",
        "",
        "Produced by `PYTHONPATH=src python benchmarks/hash_layer.py --out DIR` (this file is "
        "written by it; the raw per-step losses and per-run figures are in `DIR/results.json`). "
        "Candidates (`--hash-activation`, `models/hash_head.py`): "
        + ", ".join(f"`{c}`" for c in candidates)
        + ". Data: 3,000 phantom films (128 px source, up to 3 findings per film), the "
        "patient-disjoint split of each seed; attention-fusion, ResNet-18, 64 bits unless "
        "stated, SGD momentum 0.9, batch 32, α = β = 0.5.",
        "",
        notes,
        "",
        "## Stability",
        "",
        "The trainer's step loop (model, loss, optimiser, split, batch order and augmentation "
        "of `cxrhash train`); a run *diverges* at the first step (0-based) whose "
        f"loss is non-finite or above {BLOWUP:g}× its first step's loss.",
        "",
        "| setting | profile | data | seeds | steps | lr | initial hash-layer scale | margin "
        "| note |",
        "|---|---|---|---|---|---|---|---|---|",
        *settings,
        "",
        *stability_table(results, candidates),
        "",
        "## Quality",
        "",
        "`cxrhash train --profile cpu-fast` (64 px, 12 epochs, lr 0.01 → 0.001 after epoch 8) on "
        "phantom3k, then the strict protocol (queries and database patient-disjoint from "
        "training). Mean ± sample std over seeds; Δ = per-seed difference to `identity` "
        "(same split, initialisation and batch order), mean ± std.",
        "",
        *quality_table(results, candidates, bits_list),
        "",
    ]
    text = "\n".join(parts)
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    """Run the unfinished cells, then rewrite the report from ``results.json``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json and runs/")
    ap.add_argument("--only", choices=("stability", "quality"), default=None)
    ap.add_argument("--settings", nargs="*", default=None, help="stability setting names")
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--bits", nargs="*", type=int, default=[64])
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs of the quality runs (default: the profile's 12); cells are not "
        "keyed by it, so use a fresh --out",
    )
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--threads", type=int, default=2, help="torch threads (1 when the cores are shared)"
    )
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "hash_layer.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = load_results(args.out / "results.json")
    if not args.report_only:
        settings = [s for s in SETTINGS if args.settings is None or s.name in args.settings]
        if args.only in (None, "stability"):
            run_stability(args.out, results, settings, args.candidates)
        if args.only in (None, "quality"):
            run_quality(args.out, results, args.bits, args.candidates, args.epochs)
    bits_list = sorted({int(k.split("|")[1]) for k in results["quality"]} | set(args.bits))
    print(write_report(results, args.doc, bits_list))


if __name__ == "__main__":
    main()
