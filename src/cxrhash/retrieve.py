"""Index a dataset with a trained model, and search the index with new images."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cxrhash.closeness import (
    SampleCollector,
    assess_queries,
    calibrate_after_build,
    recalibrate_index,
)
from cxrhash.data.dataset import CXRDataset, SkippedSample
from cxrhash.data.images import ImageReadError, load_resized
from cxrhash.encode import iter_engine_batches
from cxrhash.index.backends import BACKENDS
from cxrhash.index.calibration import Closeness
from cxrhash.index.codes import pack_codes
from cxrhash.index.durable import write_json_atomic
from cxrhash.index.reader import IndexReader
from cxrhash.index.rerank import check_mode
from cxrhash.index.store import HashIndex, SearchHit
from cxrhash.inference import Encoder, Encoding, EngineSpec, as_engine
from cxrhash.models.heatmaps import check_heatmap
from cxrhash.models.output import HashOutput
from cxrhash.training.checkpoint import CheckpointError, load_model

LOG = logging.getLogger(__name__)
MODEL_REF = "model.json"
#: Re-rank of ``cxrhash search`` unless told otherwise: none. The asymmetric re-rank
#: was not measured never to hurt (docs/search.md, "Two-stage search: which default").
DEFAULT_RERANK = "none"


def findings_text(row: np.ndarray, pathologies: list[str]) -> str:
    """NIH-style findings string (``A|B`` or ``No Finding``) for a label row; ``""`` for
    a row with no known label (a film without findings, e.g. from a PACS)."""
    if not np.isfinite(row).any():
        return ""
    names = [p for p, v in zip(pathologies, row, strict=True) if v == 1]
    return "|".join(names) if names else "No Finding"


@dataclass
class IndexReport:
    """What ``cxrhash index`` did; ``skipped`` are the unreadable images (not indexed)."""

    added: int
    already_indexed: int
    skipped: list[SkippedSample] = field(default_factory=list)
    seconds: float = 0.0
    total: int = 0

    @property
    def unreadable(self) -> int:
        """How many images could not be read."""
        return len(self.skipped)

    @property
    def images_per_second(self) -> float:
        """Indexing throughput of this run (0 when nothing was added)."""
        return self.added / self.seconds if self.seconds > 0 else 0.0

    def unreadable_summary(self, limit: int = 5) -> str:
        """``"N unreadable: path, path, … (M more)"``, or ``""`` when every image was read."""
        if not self.skipped:
            return ""
        shown = ", ".join(s.path or s.case_id for s in self.skipped[:limit])
        more = self.unreadable - limit
        return f"{self.unreadable} unreadable: {shown}" + (f", … ({more} more)" if more > 0 else "")


def build_index(
    checkpoint: Path,
    dataset: CXRDataset,
    index_dir: Path,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    commit_every: int = 8192,
    backend: str | None = None,
    backend_params: dict[str, Any] | None = None,
    shard_size: int | None = None,
    store_floats: bool | None = None,
    keep_source_names: bool | None = None,
    engine: EngineSpec | None = None,
) -> IndexReport:
    """Encode ``dataset`` and append it to the index at ``index_dir`` (created if new).

    Images are decoded by ``num_workers`` DataLoader processes; the progress bar
    shows images/s. Codes are committed every ``commit_every`` images (each commit
    is atomic and appends to the shard files, so it costs the batch, not the
    index). Images already in the index (same case id) are skipped, so re-running
    after an interruption or with a grown folder only adds what is new.
    Unreadable images are listed in the report (and logged), not indexed.
    ``backend``, ``backend_params``, ``shard_size`` and ``store_floats`` (keep each
    film's float outputs, float16, for ``search --rerank floats``) apply when the
    index is created (see :meth:`HashIndex.create`); for an existing index they must
    match. An index with a float store gets the float rows of every film added.
    ``keep_source_names`` (also fixed at creation; default no) stores case ids and
    source paths as given instead of keyed pseudonyms (:mod:`cxrhash.index.pseudonyms`).
    A backend that keeps its codes in a server (``milvus``) is reached before encoding and
    sent the new codes at the end.
    The index's closeness calibration (``calibration.npz``, :mod:`cxrhash.closeness`) is
    brought up to date from a seeded sample of the films encoded. ``engine``: PyTorch (the
    default) or ONNX Runtime (:class:`~cxrhash.inference.EngineSpec`).
    """
    model, payload = load_model(checkpoint)
    config = payload["config"]
    encoder = (engine or EngineSpec()).open(model, payload)
    index_dir = Path(index_dir)
    with HashIndex.open_or_create(
        index_dir,
        config["bits"],
        payload["model_id"],
        backend=backend,
        backend_params=backend_params,
        shard_size=shard_size,
        store_floats=store_floats,
        source_names=keep_source_names,
    ) as index:
        write_json_atomic(
            index_dir / MODEL_REF,
            {"checkpoint": str(Path(payload["path"]).resolve()), "model_id": payload["model_id"]},
        )
        mirrored = BACKENDS.get(index.backend).needs_server
        if mirrored:  # reach the server (and check its copy) before encoding, not after
            index.sync_backends()
        present = index.contains(dataset.case_ids)
        todo = [i for i, p in enumerate(present) if not p]
        report = IndexReport(added=0, already_indexed=len(dataset) - len(todo))
        before = len(index)
        collector = SampleCollector(len(todo)) if todo else None
        if todo:
            t0 = time.perf_counter()
            _append_encoded(
                index,
                encoder,
                dataset,
                np.asarray(todo),
                config["image_size"],
                report,
                collector,
                batch_size=batch_size,
                num_workers=num_workers,
                progress=progress,
                commit_every=commit_every,
            )
            report.seconds = time.perf_counter() - t0
        if mirrored:
            index.sync_backends()
        report.total = len(index)
        calibrate_after_build(
            index_dir, encoder, payload, dataset, collector, before, report.total, progress=progress
        )
    for s in report.skipped:
        LOG.warning("not indexed, unreadable: %s: %s", s.path or s.case_id, s.reason)
    return report


def recalibrate(
    checkpoint: Path,
    dataset: CXRDataset,
    index_dir: Path,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    engine: EngineSpec | None = None,
) -> int:
    """Replace the closeness calibration of the index at ``index_dir`` by one made from a
    seeded sample of ≤ 4096 films of ``dataset`` (the films it holds) encoded with
    ``checkpoint`` (its model) by ``engine`` (default PyTorch); ``cxrhash index --calibrate``.
    Returns the films in the sample (0: too few to calibrate, nothing written)."""
    model, payload = load_model(checkpoint)
    encoder = (engine or EngineSpec()).open(model, payload)
    sample = recalibrate_index(
        encoder, payload, dataset, Path(index_dir), batch_size=batch_size,
        num_workers=num_workers, progress=progress,
    )  # fmt: skip
    return 0 if sample is None else len(sample)


def _append_encoded(
    index: HashIndex,
    model: Encoder,
    dataset: CXRDataset,
    todo: np.ndarray,
    image_size: int,
    report: IndexReport,
    collector: SampleCollector | None,
    *,
    batch_size: int,
    num_workers: int,
    progress: bool,
    commit_every: int,
) -> None:
    """Encode ``dataset[todo]`` and add it to ``index``, one atomic commit per ``commit_every``;
    ``collector`` keeps its calibration sample."""
    sub = dataset.with_image_size(image_size, augment=False).subset(todo)
    pending: dict[str, list] = {
        "codes": [],
        "floats": [],
        "case_ids": [],
        "findings": [],
        "pids": [],
        "paths": [],
    }

    def flush() -> None:
        if not pending["case_ids"]:
            return
        index.add(
            np.concatenate(pending["codes"]),
            case_ids=pending["case_ids"],
            findings=pending["findings"],
            patient_ids=pending["pids"],
            source_paths=pending["paths"],
            floats=np.concatenate(pending["floats"]) if index.stores_floats else None,
        )
        report.added += len(pending["case_ids"])
        for v in pending.values():
            v.clear()

    for enc, batch in iter_engine_batches(
        model, sub, batch_size=batch_size, num_workers=num_workers, progress=progress,
        desc="index",
    ):  # fmt: skip
        report.skipped.extend(batch["skipped"])
        if enc is None:
            continue
        floats = enc.output.hash.float().cpu().numpy()
        if collector is not None:
            collector.add(batch["idx"].numpy(), enc.map_stats, floats)
        rows = [int(todo[i]) for i in batch["idx"].tolist()]
        pending["codes"].append(pack_codes(floats >= 0))
        pending["floats"].append(floats)
        pending["case_ids"].extend(batch["case_id"])
        pending["findings"].extend(
            findings_text(dataset.labels[r], dataset.pathologies) for r in rows
        )
        pending["pids"].extend(batch["patient_id"])
        pending["paths"].extend(dataset.paths[r] if dataset.paths else None for r in rows)
        if len(pending["case_ids"]) >= commit_every:
            flush()  # each commit is atomic: an interrupted run resumes after it
    flush()


@dataclass
class QueryResult:
    """The hits for one query image, with its heat-map (``heatmap`` says which kind:
    one of ``models.heatmaps.HEATMAPS``); for a query that could not be read, ``error``
    says why, and it has no image, hits or predictions. ``closeness``: whether the archive
    holds a close match (``None``: unknown, an index without calibration)."""

    path: str
    hits: list[SearchHit]
    image: np.ndarray | None
    attention: np.ndarray | None
    predicted: dict[str, float]
    heatmap: str = "attention"
    error: str | None = None
    closeness: Closeness | None = None


def resolve_checkpoint(index_dir: Path, checkpoint: Path | None) -> Path:
    """The checkpoint given, or the one recorded in the index's ``model.json``."""
    if checkpoint is not None:
        return Path(checkpoint)
    ref = Path(index_dir) / MODEL_REF
    if not ref.exists():
        raise FileNotFoundError(
            f"{ref} not found: pass --checkpoint, or point --index at a directory made by "
            "`cxrhash index`"
        )
    try:
        recorded = json.loads(ref.read_text(encoding="utf-8"))["checkpoint"]
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(
            f"{ref} does not name a checkpoint ({type(err).__name__}: {err}); pass --checkpoint"
        ) from err
    if not isinstance(recorded, str):
        raise CheckpointError(f"{ref} does not name a checkpoint; pass --checkpoint")
    return Path(recorded)


def encode_films(model: Encoder, images: list[np.ndarray], heatmap: str = "attention") -> Encoding:
    """What the model (or engine) makes of S×S query films, with heat-maps of ``heatmap``."""
    x = torch.from_numpy(np.stack(images)[:, None].astype(np.float32))
    return as_engine(model).encode(x, heatmap)


def encode_images(
    model: Encoder, images: list[np.ndarray], heatmap: str = "attention"
) -> tuple[np.ndarray, HashOutput, Tensor | None]:
    """Packed codes, outputs and heat-maps (of kind ``heatmap``) of S×S query images."""
    enc = encode_films(model, images, heatmap)
    return pack_codes(enc.output.hash.float().cpu().numpy() >= 0), enc.output, enc.heatmaps


def search_images(
    paths: list[Path],
    index_dir: Path,
    *,
    k: int = 10,
    checkpoint: Path | None = None,
    rerank: str = DEFAULT_RERANK,
    shortlist: int | None = None,
    heatmap: str = "attention",
    engine: EngineSpec | None = None,
) -> list[QueryResult]:
    """Top-``k`` neighbours of each query image in the index, with each query's heat-map
    (``heatmap``: the network's ``attention`` or ``gradcam``, ``models.heatmaps``).

    ``rerank``: ``none`` (Hamming order, ties by id), ``asymmetric`` (the
    ``shortlist`` Hamming-nearest re-ranked by ⟨f_q, b⟩ against their codes) or
    ``floats`` (re-ranked by cosine to their stored float outputs; an index made
    with ``store_floats``); see :mod:`cxrhash.index.rerank`.

    A query file that cannot be read or decoded does not stop the others: its result
    has ``error`` set (the reason) and no hits. Problems with the index, the model or
    the options still raise. ``engine``: PyTorch (default) or ONNX Runtime (attention only).
    """
    check_mode(rerank)
    check_heatmap(heatmap)
    ckpt = resolve_checkpoint(index_dir, checkpoint)
    model, payload = load_model(ckpt)
    size = payload["config"]["image_size"]
    encoder = (engine or EngineSpec()).open(model, payload)
    with HashIndex.open(index_dir, model_id=payload["model_id"]) as index:
        results = []
        for p in paths:
            try:
                image = load_resized(p, size)
            except ImageReadError as err:
                LOG.info("query %s not searched: %s", p, err.reason)
                results.append(QueryResult(str(p), [], None, None, {}, heatmap, err.reason))
                continue
            results.append(QueryResult(str(p), [], image, None, {}, heatmap))
        good = [r for r in results if r.image is not None]
        if not good:
            return results
        images = [r.image for r in good if r.image is not None]
        found = search_decoded(
            encoder, index, images, k=k, rerank=rerank, shortlist=shortlist, heatmap=heatmap
        )
    for i, r in enumerate(good):
        r.hits = found.hits[i]
        r.attention = found.maps[i, 0].numpy() if found.maps is not None else None
        r.predicted = found.predicted(i, payload["label_names"])
        r.closeness = found.closeness[i]
    return results


@dataclass
class DecodedSearch:
    """What :func:`search_decoded` found for a batch of decoded query films: the hits per
    query, the finding probabilities (Q×L), the heat-maps, the time each stage took, and
    per query whether the archive holds a close match (``None``: unknown)."""

    hits: list[list[SearchHit]]
    probabilities: np.ndarray
    maps: Tensor | None
    encode_seconds: float
    search_seconds: float
    closeness: list[Closeness | None] = field(default_factory=list)

    def predicted(self, i: int, label_names: list[str]) -> dict[str, float]:
        """Query ``i``'s probability of each finding, by name."""
        return {n: float(v) for n, v in zip(label_names, self.probabilities[i], strict=True)}

    def take(self, i: int, k: int | None = None) -> DecodedSearch:
        """Query ``i`` alone, its hits cut to the first ``k``: what a search of that one film
        would have found (a batch searched with a larger k holds each smaller k's hits first).

        Every field that is a list, an array or a tensor is per query (first axis) and is
        sliced to row ``i``; the others (the timings) are the batch's and are kept.
        """
        parts: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list | np.ndarray | Tensor):
                value = value[i : i + 1]
            parts[f.name] = value
        parts["hits"] = [self.hits[i][:k]]
        return replace(self, **parts)


def search_decoded(
    model: Encoder,
    index: IndexReader,
    images: list[np.ndarray],
    *,
    k: int = 10,
    rerank: str = DEFAULT_RERANK,
    shortlist: int | None = None,
    heatmap: str = "attention",
) -> DecodedSearch:
    """Encode decoded S×S query films with a loaded ``model`` and search an open ``index``:
    the one search path of ``cxrhash search`` (:func:`search_images`) and the server.
    Each query is assessed against the index's closeness calibration (:mod:`.closeness`)."""
    t0 = time.perf_counter()
    enc = encode_films(model, images, heatmap)
    t1 = time.perf_counter()
    floats = enc.output.hash.float().cpu().numpy()
    codes = pack_codes(floats >= 0)
    hits = index.search(codes, k, rerank=rerank, shortlist=shortlist, query_floats=floats)
    stats = [] if enc.map_stats is None else [enc.map_stats]
    closeness = assess_queries(index, stats, floats)
    t2 = time.perf_counter()
    probs = torch.sigmoid(enc.output.logits.float().cpu()).numpy()
    return DecodedSearch(hits, probs, enc.heatmaps, t1 - t0, t2 - t1, closeness)


def checkpoint_dataset(
    checkpoint: Path, data: str, part: str | None = None
) -> tuple[Path, CXRDataset]:
    """The checkpoint file and the dataset ``data`` at its image size, restricted to
    ``part`` of the run's split when given (what ``cxrhash index`` encodes)."""
    from cxrhash.data.readers import open_dataset
    from cxrhash.data.splits import load_split
    from cxrhash.training.checkpoint import load_checkpoint

    payload = load_checkpoint(checkpoint)
    dataset = open_dataset(data, payload["config"]["image_size"])
    if part is not None:
        split = load_split(Path(payload["path"]).parent / "split.json", dataset.case_ids)
        if part not in split:
            raise ValueError(f"no split part {part!r}; parts: {sorted(split)}")
        dataset = dataset.subset(split[part])
    return Path(payload["path"]), dataset
