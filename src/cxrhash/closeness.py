"""Honest similarity (issue #13 item 2): calibrate an index's closeness when it is built,
and say "no close match in this archive" for a query outside it.

:mod:`cxrhash.index.calibration` holds the sample file and the statistics; this module
runs the model or engine: it keeps a seeded sample of the films ``build_index`` encodes
anyway (:class:`SampleCollector`), re-encodes a sample of a dataset to (re)calibrate an index
(:func:`calibrate_index`, :func:`recalibrate_index`), and assesses the queries of a search
(:func:`assess_queries`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cxrhash.data.dataset import CXRDataset
from cxrhash.encode import iter_engine_batches
from cxrhash.index.calibration import (
    MAX_SAMPLE,
    MIN_SAMPLE,
    CalibrationSample,
    Closeness,
    load_calibration,
    merge_samples,
    read_sample,
    save_sample,
)
from cxrhash.index.folder import write_lock
from cxrhash.index.reader import IndexReader
from cxrhash.index.store import HashIndex
from cxrhash.inference import Encoder
from cxrhash.models.feature_stats import FilmStatistics

LOG = logging.getLogger(__name__)


class SampleCollector:
    """Keeps the feature-map statistics, pixel statistics and float hash outputs of a seeded
    choice of at most ``cap`` of ``total`` films as they are encoded (by their position in
    encoding order)."""

    def __init__(self, total: int, *, cap: int = MAX_SAMPLE, seed: int = 0) -> None:
        self._chosen = np.zeros(total, bool)
        pick = np.random.default_rng(seed).choice(total, min(cap, total), replace=False)
        self._chosen[pick] = True
        self._stats: list[np.ndarray] = []
        self._pixels: list[np.ndarray] = []
        self._hashes: list[np.ndarray] = []

    def add(self, positions: np.ndarray, stats: FilmStatistics | None, hashes: np.ndarray) -> None:
        """Keep the chosen ones of a batch (``positions`` in encoding order)."""
        if stats is None or not len(stats.maps) == len(stats.pixels) == len(positions):
            return
        keep = self._chosen[np.asarray(positions)]
        self._stats.append(stats.maps.numpy()[keep].astype(np.float32))
        self._pixels.append(stats.pixels.numpy()[keep].astype(np.float32))
        self._hashes.append(np.asarray(hashes, np.float32)[keep])

    def sample(self, model_id: str, represented: int) -> CalibrationSample | None:
        """What was kept, standing for ``represented`` films (``None``: nothing kept)."""
        if not self._stats or sum(len(s) for s in self._stats) == 0:
            return None
        stats, hashes = np.concatenate(self._stats), np.concatenate(self._hashes)
        pixels = np.concatenate(self._pixels)
        if not all(np.isfinite(a).all() for a in (stats, pixels, hashes)):
            LOG.warning("non-finite network outputs: this index is not calibrated")
            return None
        return CalibrationSample(model_id, stats, hashes, max(represented, len(stats)), pixels)


def encode_sample(
    model: Encoder,
    dataset: CXRDataset,
    collector: SampleCollector,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
) -> int:
    """Encode ``dataset`` (already at the model's image size) into ``collector``; the
    number of films read."""
    read = 0
    for enc, batch in iter_engine_batches(
        model, dataset, batch_size=batch_size, num_workers=num_workers, progress=progress,
        desc="calibrate",
    ):  # fmt: skip
        if enc is None:
            continue
        collector.add(batch["idx"].numpy(), enc.map_stats, enc.output.hash.float().cpu().numpy())
        read += len(batch["idx"])
    return read


def store_calibration(
    index_dir: Path, new: CalibrationSample | None, bits: int, *, replace: bool = False
) -> CalibrationSample | None:
    """Merge ``new`` into the index's stored sample (or replace it) and write it; the sample
    written, or ``None`` when there are too few films to calibrate (nothing written)."""
    if new is None:
        return None
    old = None if replace else read_sample(index_dir, new.model_id, bits)
    merged = merge_samples(old, new)
    if len(merged) < MIN_SAMPLE:
        LOG.info("%d films are too few to calibrate closeness (%d needed)", len(merged), MIN_SAMPLE)
        return None
    save_sample(index_dir, merged)
    return merged


def calibrate_index(
    model: Encoder,
    payload: dict[str, Any],
    dataset: CXRDataset,
    index_dir: Path,
    *,
    index_size: int,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    seed: int = 0,
) -> CalibrationSample | None:
    """Replace the index's calibration by one of a seeded sample of ≤ 4096 films of
    ``dataset`` (the films the index was made from), standing for the index's
    ``index_size`` films; ``model`` and ``payload`` are what ``load_model`` returned."""
    config = payload["config"]
    n = min(MAX_SAMPLE, len(dataset))
    rows = np.sort(np.random.default_rng(seed).choice(len(dataset), n, replace=False))
    collector = SampleCollector(n, cap=n)
    encode_sample(
        model,
        dataset.with_image_size(config["image_size"], augment=False).subset(rows),
        collector,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    new = collector.sample(payload["model_id"], index_size)
    return store_calibration(index_dir, new, config["bits"], replace=True)


def recalibrate_index(
    model: Encoder,
    payload: dict[str, Any],
    dataset: CXRDataset,
    index_dir: Path,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
) -> CalibrationSample | None:
    """:func:`calibrate_index` of an existing index (``cxrhash index --calibrate``), made
    with its model (checked) by ``model`` (a model or an engine: the sample is the same)
    while holding its write lock."""
    with HashIndex.open(index_dir, model_id=payload["model_id"]) as index:
        total = len(index)
    with write_lock(index_dir, "writing to"):
        return calibrate_index(
            model, payload, dataset, index_dir, index_size=total, batch_size=batch_size,
            num_workers=num_workers, progress=progress,
        )  # fmt: skip


def calibrate_after_build(
    index_dir: Path,
    model: Encoder,
    payload: dict[str, Any],
    dataset: CXRDataset,
    collector: SampleCollector | None,
    before: int,
    total: int,
    *,
    progress: bool = False,
) -> CalibrationSample | None:
    """Bring the closeness calibration of an index ``build_index`` just added to up to date:
    merge the sample of the films added into the stored one (a new index: write it); an
    index with no usable calibration yet (made before it, or a bad file) is calibrated
    from a sample of ``dataset``. Returns the sample written, ``None`` when none was."""
    bits, model_id = payload["config"]["bits"], payload["model_id"]
    stored = read_sample(index_dir, model_id, bits)
    if collector is not None and (before == 0 or stored is not None):
        return store_calibration(index_dir, collector.sample(model_id, total - before), bits)
    if stored is not None or total == 0:
        return stored
    return calibrate_index(model, payload, dataset, index_dir, index_size=total, progress=progress)


def assess_queries(
    index: IndexReader, captured: list[FilmStatistics], hashes: np.ndarray
) -> list[Closeness | None]:
    """Each query's closeness to the archive of ``index``: ``captured`` are the statistics of
    the forward that made the Q×k float ``hashes``. ``None`` per query when the index has no
    usable calibration (or the statistics do not fit it): closeness unknown."""
    unknown: list[Closeness | None] = [None] * len(hashes)
    calibration = load_calibration(index.path, index.model_id, index.bits)
    if calibration is None or not captured:
        return unknown
    stats, pixels = captured[0].maps.numpy(), captured[0].pixels.numpy()
    if (
        stats.shape != (len(hashes), calibration.stats_dim)
        or pixels.shape != (len(hashes), calibration.pixels_dim)
        or not (np.isfinite(stats).all() and np.isfinite(pixels).all())
    ):
        return unknown
    return list(calibration.assess(stats, pixels, hashes))
