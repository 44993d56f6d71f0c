"""`cxrhash bench`: cache splits and features, run the cells resumably, write the report."""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cxrhash.bench.cells import frozen_features, run_deep_cell, run_shallow_cell, score_external
from cxrhash.bench.grid import Cell, GridSpec, build_grid
from cxrhash.bench.report import write_report
from cxrhash.config import TrainConfig, make_config
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import make_split, save_split
from cxrhash.methods import METHODS

LOG = logging.getLogger(__name__)


@dataclass
class BenchSpec:
    """A bench run: one dataset, one profile, one grid (saved as ``bench.json``)."""

    data: str
    profile: str = "bench"
    grid: GridSpec = field(default_factory=GridSpec)
    overrides: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None  # backbone weights file (e.g. `cxrhash pretrain` output)

    def base_config(self, method: str | None = None) -> TrainConfig:
        """The training config the cells start from; ``method`` picks its paper's backbone.

        In the ``paper`` profile a method with a ``paper_backbone`` (saliency-fusion:
        DenseNet-121) gets it unless the bench overrides ``backbone``.
        """
        paper_backbone = METHODS.get(method).paper_backbone if method else None
        return make_config(
            self.profile, paper_backbone=paper_backbone, data=self.data, **self.overrides
        )

    def to_json(self) -> str:
        """Serialise (stable key order)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BenchSpec:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        grid: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("grid").items()
        }
        return cls(grid=GridSpec(**grid), **d)


class BenchError(ValueError):
    """The bench folder belongs to another bench, or a setting is invalid."""


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _check_folder(spec: BenchSpec, out: Path) -> None:
    """Refuse to resume a folder made with another dataset, profile or training settings."""
    saved = out / "bench.json"
    if saved.exists():
        old = json.loads(saved.read_text())
        mine = json.loads(spec.to_json())
        diffs = [k for k in ("data", "profile", "overrides", "pretrained") if old.get(k) != mine[k]]
        if diffs:
            raise BenchError(
                f"{out} holds a bench with different {', '.join(diffs)}; choose another --out "
                "or rerun with the same settings to resume"
            )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(saved, json.loads(spec.to_json()))


def cache_splits(spec: BenchSpec, out: Path) -> dict[int, Path]:
    """One patient-disjoint split per seed, shared by every method (``splits/seed{s}.json``).

    Official parts are honoured as in training (:func:`cxrhash.data.splits.make_split`).
    """
    base = spec.base_config()
    paths: dict[int, Path] = {}
    dataset = None
    for seed in spec.grid.seeds:
        path = out / "splits" / f"seed{seed}.json"
        paths[seed] = path
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if dataset is None:
            dataset = open_dataset(base.data, base.image_size)
        official = Path(base.official_split) if base.official_split else None
        split = make_split(
            dataset.case_ids, dataset.patient_ids, base.split_fractions, seed, official
        )
        save_split(path, split, dataset.case_ids)
    return paths


def _run_cell(
    cell: Cell, spec_json: str, out: str, split_file: str, threads: int
) -> dict[str, Any]:
    """Worker entry point: run one cell in a fresh process."""
    torch.set_num_threads(threads)
    spec = BenchSpec.from_json(spec_json)
    if cell.kind == "shallow":
        feats = Path(out) / "features" / f"seed{cell.seed}.npz"
        return run_shallow_cell(cell, feats, spec.data)
    run_dir = Path(out) / "runs" / cell.cell_id
    base = spec.base_config(cell.method)
    return run_deep_cell(cell, base, run_dir, Path(split_file), spec.pretrained)


def run_bench(
    spec: BenchSpec,
    out: Path,
    *,
    jobs: int = 1,
    budget_minutes: float | None = None,
    external: dict[str, Path] | None = None,
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Run every unfinished cell of ``spec`` and (re)write the report in ``out/report``.

    Finished cells are stored as ``out/cells/<cell_id>.json`` and skipped when
    the bench is run again; an interrupted deep cell resumes from its last
    epoch. No new cell starts after ``budget_minutes``; the report then covers
    the finished cells and lists the missing ones. A failing cell is logged to
    ``out/cells/<cell_id>.error.txt`` and does not stop the others.

    Returns:
        ``{"done": n, "failed": [...], "pending": [...], "report": path}``.
    """
    out = Path(out)
    t_start = time.monotonic()
    cells = _prepare_bench(spec, out) if spec.data else []
    cell_dir = out / "cells"
    cell_dir.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cells if not (cell_dir / f"{c.cell_id}.json").exists()]
    deadline = None if budget_minutes is None else t_start + 60 * budget_minutes
    bar = tqdm(
        total=len(cells),
        initial=len(cells) - len(todo),
        desc="bench",
        unit="cell",
        disable=not progress,
    )
    failed = _run_cells(todo, spec, out, jobs=jobs, deadline=deadline, bar=bar) if todo else []
    bar.close()
    results = _finished_results(cells, cell_dir)
    no_finding = spec.base_config().no_finding_class  # external codes are scored alike
    for name, folder in (external or {}).items():
        results.append(score_external(name, Path(folder), no_finding_class=no_finding))
    missing = [c.cell_id for c in cells if not (cell_dir / f"{c.cell_id}.json").exists()]
    notes = _notes(spec, missing, failed, time.monotonic() - t_start)
    title = f"cxrhash bench: {spec.data or 'external codes'}"
    report = _write_bench_report(results, out / "report", title=title, command=command, notes=notes)
    return {"done": len(results), "failed": failed, "pending": missing, "report": report}


def _prepare_bench(spec: BenchSpec, out: Path) -> list[Cell]:
    """Claim ``out`` for ``spec``, cache the splits (and the frozen features of the shallow
    baselines) every cell reads; returns the grid's cells."""
    _check_folder(spec, out)
    cells = build_grid(spec.grid)
    splits = cache_splits(spec, out)
    if spec.grid.shallow:
        base = spec.base_config()
        for seed, split_file in splits.items():
            feats = out / "features" / f"seed{seed}.npz"
            if not feats.exists():
                feats.parent.mkdir(parents=True, exist_ok=True)
                frozen_features(base, split_file, feats, spec.pretrained)
    return cells


def _run_cells(
    todo: list[Cell],
    spec: BenchSpec,
    out: Path,
    *,
    jobs: int,
    deadline: float | None,
    bar: tqdm,
) -> list[str]:
    """Run the cells in ``jobs`` fresh processes, none started after ``deadline``
    (``time.monotonic()``); returns the ids of the cells that failed."""
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    spec_json = spec.to_json()
    pending = list(todo)
    failed: list[str] = []
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        running: dict[Future, Cell] = {}

        def launch() -> None:
            while pending and len(running) < jobs:
                if deadline is not None and time.monotonic() > deadline:
                    return
                cell = pending.pop(0)
                split = str(out / "splits" / f"seed{cell.seed}.json")
                future = pool.submit(_run_cell, cell, spec_json, str(out), split, threads)
                running[future] = cell

        launch()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                cell = running.pop(future)
                if not _store_result(cell, future, out / "cells"):
                    failed.append(cell.cell_id)
                bar.update(1)
                bar.set_postfix(last=cell.cell_id)
            launch()
    return failed


def _store_result(cell: Cell, future: Future, cell_dir: Path) -> bool:
    """Save a finished cell's result, or its traceback in ``<cell_id>.error.txt``;
    returns whether it succeeded."""
    try:
        _write_json(cell_dir / f"{cell.cell_id}.json", future.result())
        (cell_dir / f"{cell.cell_id}.error.txt").unlink(missing_ok=True)
    except Exception as exc:  # noqa: BLE001 - one failing cell must not stop a 2-hour bench
        text = "".join(traceback.format_exception(exc))
        (cell_dir / f"{cell.cell_id}.error.txt").write_text(text)
        LOG.error("cell %s failed: %s", cell.cell_id, exc)
        return False
    return True


def _finished_results(cells: list[Cell], cell_dir: Path) -> list[dict[str, Any]]:
    """The stored results of the grid's finished cells, in grid order."""
    return [
        json.loads((cell_dir / f"{c.cell_id}.json").read_text())
        for c in cells
        if (cell_dir / f"{c.cell_id}.json").exists()
    ]


def _write_bench_report(
    results: list[dict[str, Any]], report_dir: Path, *, title: str, command: str, notes: str
) -> Path:
    """The full report of the finished cells, or a page saying none has finished yet
    (rather than leave a stale or missing report)."""
    if results:
        return write_report(results, report_dir, title=title, command=command, notes=notes)
    report = report_dir / "report.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(f"# {title}\n\n`{command}`\n\nNo cell has finished yet.\n\n{notes}\n")
    return report


def _notes(spec: BenchSpec, missing: list[str], failed: list[str], seconds: float) -> str:
    lines = [f"Wall time of this invocation: {seconds / 60:.1f} min."]
    if spec.grid.shallow:
        src = spec.pretrained or "a randomly initialised backbone (seed 0)"
        lines.append(f"Shallow baselines hash frozen global-pooled features of {src}.")
    if missing:
        lines.append(
            f"**Not finished ({len(missing)} cells)**: "
            + ", ".join(missing[:20])
            + (" …" if len(missing) > 20 else "")
            + ". Rerun the same command to resume."
        )
    if failed:
        lines.append(f"**Failed**: {', '.join(failed)} (see `cells/*.error.txt`).")
    return "\n\n".join(lines)
