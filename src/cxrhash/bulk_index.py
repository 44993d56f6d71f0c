"""Distributed bulk encoding: N processes (on one or several machines) index one archive.

``cxrhash index --nproc N`` (or ``torchrun ... -m cxrhash index``) starts N workers. Worker
r of N encodes the films whose case id hashes to r (:func:`worker_of`: stable whatever
order each worker lists the films in) into an index of its own, ``OUT/parts/worker-R``,
committed every ``commit_every`` films like any index. When every worker is done, worker 0
merges the parts into the index at ``OUT`` (:mod:`cxrhash.index.merging`: the stored rows
as they are, no re-encoding), deletes them and brings the closeness calibration up to
date. A worker that fails costs its films since its last commit: every worker skips the
films in the index or in any part (those of a run with another N too), so running the
command again resumes, and a merge cut short is finished by the next run.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from cxrhash.closeness import calibrate_after_build
from cxrhash.data.dataset import CXRDataset
from cxrhash.index.durable import write_json_atomic
from cxrhash.index.manifest import MANIFEST_NAME
from cxrhash.index.merging import merge_index
from cxrhash.index.store import HashIndex
from cxrhash.inference import EngineSpec
from cxrhash.retrieve import MODEL_REF, IndexReport, build_index
from cxrhash.training.checkpoint import load_model

LOG = logging.getLogger(__name__)
T = TypeVar("T")
PARTS_DIR = "parts"
#: Workers wait for the slowest at the end; a long archive may keep them hours apart.
WAIT = timedelta(days=7)


@dataclass
class IndexOptions:
    """How the index at ``OUT`` is made (fixed at creation; see ``build_index``)."""

    backend: str | None = None
    backend_params: dict[str, Any] | None = None
    shard_size: int | None = None
    store_floats: bool | None = None
    keep_source_names: bool | None = None


def worker_of(case_id: str, world: int) -> int:
    """The worker (of ``world``) that encodes ``case_id``: the first 8 bytes of its SHA-256."""
    return int.from_bytes(sha256(case_id.encode("utf-8")).digest()[:8], "big") % world


def part_dirs(index_dir: Path) -> list[Path]:
    """The parts of earlier or running workers under ``index_dir``, by name."""
    parts = Path(index_dir) / PARTS_DIR
    return sorted(p for p in parts.iterdir() if p.is_dir()) if parts.is_dir() else []


def build_index_distributed(
    checkpoint: Path,
    dataset: CXRDataset,
    index_dir: Path,
    *,
    options: IndexOptions,
    batch_size: int = 64,
    num_workers: int = 0,
    commit_every: int = 8192,
    engine: EngineSpec | None = None,
    progress: bool = True,
) -> IndexReport | None:
    """This worker's share of a distributed ``cxrhash index`` (the process group of the
    launcher: ``RANK``, ``WORLD_SIZE``); worker 0 returns the report of the whole run once
    the parts are merged, the others ``None``."""
    index_dir = Path(index_dir)
    dist.init_process_group("gloo", timeout=WAIT)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        floats, names = _agree(
            lambda: _open_target(checkpoint, index_dir, options) if rank == 0 else None
        )
        options = replace(options, store_floats=floats, keep_source_names=names)
        todo, held = films_to_encode(dataset, index_dir, rank, world)
        engine = _engine_threads(engine or EngineSpec())
        LOG.info("worker %d of %d: %d films to encode, %d indexed", rank, world, len(todo), held)
        part = build_index(
            checkpoint,
            dataset.subset(todo),
            index_dir / PARTS_DIR / f"worker-{rank:04d}",
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress and rank == 0,
            commit_every=commit_every,
            store_floats=options.store_floats,
            keep_source_names=options.keep_source_names,
            engine=engine,
        )
        mine = replace(part, already_indexed=held + part.already_indexed)
        reports: list[IndexReport | None] = [None] * world if rank == 0 else []
        dist.gather_object(mine, reports if rank == 0 else None, dst=0)
        if rank != 0:
            return None
        return _finish(checkpoint, dataset, index_dir, [r for r in reports if r is not None])
    finally:
        dist.destroy_process_group()


def films_to_encode(
    dataset: CXRDataset, index_dir: Path, rank: int, world: int
) -> tuple[np.ndarray, int]:
    """The positions in ``dataset`` of worker ``rank``'s films that neither the index nor any
    part holds, and how many of its films they hold. The parts are asked before the index:
    a merge moves rows from a part to the index, never back."""
    mine = [i for i, c in enumerate(dataset.case_ids) if worker_of(c, world) == rank]
    ids = [dataset.case_ids[i] for i in mine]
    held = np.zeros(len(mine), bool)
    for folder in [*part_dirs(index_dir), index_dir]:
        if not (folder / MANIFEST_NAME).is_file():
            continue  # a part whose worker has not created it yet, or an index in creation
        with HashIndex.open(folder, verify=False) as ix:
            held |= np.asarray(ix.contains(ids), bool)
    return np.asarray(mine, np.int64)[~held], int(held.sum())


def merge_parts(index_dir: Path) -> int:
    """Merge every part under ``index_dir`` into its index and delete it; rows added. Run
    by worker 0 when all are done, and by a single-process ``cxrhash index`` that finds the
    parts of an interrupted distributed one."""
    added = 0
    with HashIndex.open(index_dir, verify=False) as target:
        for folder in part_dirs(index_dir):
            if (folder / MANIFEST_NAME).is_file():
                with HashIndex.open(folder) as part:
                    n = merge_index(target, part)
                LOG.info("merged %d films of %s into %s", n, folder.name, index_dir)
                added += n
            shutil.rmtree(folder)
    (index_dir / PARTS_DIR).rmdir()
    return added


def _open_target(checkpoint: Path, index_dir: Path, options: IndexOptions) -> tuple[bool, bool]:
    """Create (or open and check against ``options``) the index at ``index_dir`` and record
    its model, before any worker encodes; whether it stores floats and keeps source names
    (what every part must do alike)."""
    _, payload = load_model(checkpoint)
    with HashIndex.open_or_create(
        index_dir,
        payload["config"]["bits"],
        payload["model_id"],
        backend=options.backend,
        backend_params=options.backend_params,
        shard_size=options.shard_size,
        store_floats=options.store_floats,
        source_names=options.keep_source_names,
    ) as index:
        kept = (index.stores_floats, index.keeps_source_names)
    write_json_atomic(
        index_dir / MODEL_REF,
        {"checkpoint": str(Path(payload["path"]).resolve()), "model_id": payload["model_id"]},
    )
    return kept


def _finish(
    checkpoint: Path, dataset: CXRDataset, index_dir: Path, reports: list[IndexReport]
) -> IndexReport:
    """Worker 0, every worker done: merge the parts, update the server copy and the
    calibration, and sum the workers' reports."""
    t0 = time.perf_counter()
    merge_parts(index_dir)
    merge_seconds = time.perf_counter() - t0
    with HashIndex.open(index_dir, verify=False) as index:
        total = len(index)
        index.sync_backends()
    model, payload = load_model(checkpoint)
    calibrate_after_build(index_dir, model, payload, dataset, None, total, total)
    LOG.info("merged the parts in %.1f s", merge_seconds)
    return IndexReport(
        added=sum(r.added for r in reports),
        already_indexed=sum(r.already_indexed for r in reports),
        skipped=[s for r in reports for s in r.skipped],
        seconds=max(r.seconds for r in reports) + merge_seconds,
        total=total,
    )


def _engine_threads(engine: EngineSpec) -> EngineSpec:
    """``engine`` with as many ONNX Runtime threads as PyTorch's (torchrun gives every
    worker ``OMP_NUM_THREADS``, 1 by default), unless told: by default ONNX Runtime takes
    every core in every worker."""
    if engine.kind == "onnx" and engine.threads is None:
        return replace(engine, threads=torch.get_num_threads())
    return engine


def _agree(step: Callable[[], T | None]) -> T:
    """Run ``step`` (worker 0's part; the others' return None) and give every worker what
    it returned there, or stop every worker with its error, so that a bad option or a
    locked index ends the run everywhere at once."""
    message: list[Any] = [None, None]
    try:
        message[1] = step()
    except Exception as err:  # sent to the other workers, then raised here
        message[0] = f"{type(err).__name__}: {err}"
        dist.broadcast_object_list(message, src=0)
        raise
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise ValueError(f"worker 0 could not open the index: {message[0]}")
    return message[1]
