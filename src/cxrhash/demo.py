"""``cxrhash demo``: the whole pipeline on embedded phantom data, on a CPU, in minutes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cxrhash.config import TrainConfig, make_config
from cxrhash.data.dataset import CXRDataset
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import load_split
from cxrhash.evaluation.evaluate import (
    COLUMN_TITLES,
    HEADLINE,
    ProtocolResult,
    format_value,
    with_distinct_share,
)
from cxrhash.retrieve import build_index, findings_text, search_images
from cxrhash.training.checkpoint import CheckpointError, load_checkpoint
from cxrhash.training.evaluate_run import evaluate_run
from cxrhash.training.trainer import train
from cxrhash.visualize import write_retrieval_figure

PHANTOM_SIZE = 128


def _pick_queries(labels: np.ndarray, n: int) -> list[int]:
    """Query rows with varied findings: distinct label patterns first, one normal film."""
    chosen: list[int] = []
    seen: set[tuple[int, ...]] = set()
    order = np.argsort(-np.nansum(labels, axis=1), kind="stable")
    for i in order:
        key = tuple(int(v) for v in np.nan_to_num(labels[i]))
        if key not in seen:
            seen.add(key)
            chosen.append(int(i))
        if len(chosen) == n - 1:
            break
    normal = [int(i) for i in range(len(labels)) if np.nansum(labels[i]) == 0]
    return chosen + normal[:1]


def run_demo(
    out: Path,
    *,
    n_images: int = 1000,
    epochs: int | None = None,
    seed: int = 0,
    console: Console | None = None,
) -> dict[str, float]:
    """Generate phantom films, train ``attention-fusion``, evaluate, index, search, plot.

    Re-running reuses what is already there (data, finished run, index).

    Returns:
        The headline metrics of the strict protocol for the learned codes.
    """
    console = console or Console()
    out = Path(out)
    t_start = time.perf_counter()
    data_dir = out / "data"
    if not (data_dir / "labels.csv").exists():
        console.rule("1/5 phantom data")
        _write_phantom(data_dir, n_images, seed, console)

    run_dir = out / "run"
    config = make_config("demo", data=f"phantom:{data_dir}", seed=seed, epochs=epochs)
    console.rule("2/5 training attention-fusion (CPU demo profile)")
    console.print(
        f"backbone {config.backbone}, {config.image_size} px, {config.bits} bits, "
        f"{config.epochs} epochs, batch {config.batch_size}"
    )
    _train_or_resume(config, run_dir, console)

    console.rule("3/5 evaluation (strict: unseen queries and database)")
    results = _evaluate(run_dir, console)

    console.rule("4/5 index the database part")
    dataset = open_dataset(f"phantom:{data_dir}", config.image_size)
    split = load_split(run_dir / "split.json", dataset.case_ids)
    index_dir = out / "index"
    _index_database(run_dir, dataset.subset(split["database"]), index_dir, console)

    console.rule("5/5 search")
    png = out / "retrieval.png"
    _search_examples(dataset.subset(split["query"]), index_dir, png, console)
    console.print(
        f"figure: {png}; training curves: {run_dir / 'training_curves.png'}; "
        f"total {time.perf_counter() - t_start:.0f} s"
    )
    strict = next(r for r in results if r.protocol == "strict")
    return {c: strict.rows["hash codes"][c] for c in HEADLINE}


def _write_phantom(data_dir: Path, n_images: int, seed: int, console: Console) -> None:
    """Write ``n_images`` phantom radiographs in NIH format into ``data_dir``."""
    from cxrhash.data.phantom import write_phantom_dataset

    write_phantom_dataset(data_dir, n_images, PHANTOM_SIZE, seed=seed)
    console.print(f"wrote {n_images} phantom radiographs to {data_dir}")


def _train_or_resume(config: TrainConfig, run_dir: Path, console: Console) -> None:
    """Train in ``run_dir``: anew, resuming an unfinished run, or not at all when finished."""
    done = _epochs_done(run_dir, console)
    if done is None:
        train(config, run_dir)
        return
    saved = TrainConfig.load(run_dir / "config.json")
    if done < saved.epochs:
        train(saved, run_dir, resume=True)
    else:
        console.print(f"reusing the finished run in {run_dir}")


def _epochs_done(run_dir: Path, console: Console) -> int | None:
    """Epochs the run in ``run_dir`` has finished, or ``None`` when there is no run this
    cxrhash can read (an unreadable one is moved aside to ``run-unreadable-<time>``)."""
    if not (run_dir / "last.pt").exists():
        return None
    try:
        return int(load_checkpoint(run_dir / "last.pt")["epoch"]) + 1
    except CheckpointError as exc:  # e.g. a run of an older cxrhash: train anew beside it
        stale = run_dir.with_name(f"run-unreadable-{int(time.time())}")
        run_dir.rename(stale)
        console.print(f"{exc}; moved it to {stale} and training anew")
        return None


def _evaluate(run_dir: Path, console: Console) -> list[ProtocolResult]:
    """Evaluate the best model of the run and print every protocol's rows."""
    results, _ = evaluate_run(run_dir / "best.pt", random_seeds=3)
    table = Table(title="retrieval quality")
    table.add_column("protocol")
    table.add_column("codes")
    columns = with_distinct_share(HEADLINE)
    for c in columns:
        table.add_column(COLUMN_TITLES.get(c, c), justify="right")
    for res in results:
        for name, row in res.rows.items():
            table.add_row(res.protocol, name, *[format_value(row, c, sep="±") for c in columns])
    console.print(table)
    return results


def _index_database(run_dir: Path, database: CXRDataset, index_dir: Path, console: Console) -> None:
    # Phantom films identify no one: keep their names and paths so the figure shows the hits.
    report = build_index(run_dir / "best.pt", database, index_dir, keep_source_names=True)
    console.print(f"index {index_dir}: {report.total} images ({report.added} added now)")


def _search_examples(queries: CXRDataset, index_dir: Path, png: Path, console: Console) -> None:
    """Search four query films with varied findings, print their hits and draw the figure."""
    picks = _pick_queries(queries.labels, 4)
    paths = [Path(str(queries.paths[i])) for i in picks]
    truth = [findings_text(queries.labels[i], queries.pathologies) for i in picks]
    found = search_images(paths, index_dir, k=5)
    for q, t in zip(found, truth, strict=True):
        hits = ", ".join(f"{h.findings} (d={h.distance})" for h in q.hits)
        console.print(f"[bold]{Path(q.path).name}[/] [{t}] → {hits}")
    write_retrieval_figure(found, png, truth)
