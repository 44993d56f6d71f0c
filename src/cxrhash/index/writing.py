"""The write path of an index: checking a batch, then adding or removing it under the lock.

``add`` is atomic: (1) the rows (codes, and float rows where stored) are appended to the
shard files and fsync-ed, (2) their metadata inserted in one SQLite transaction,
(3) ``index.json`` replaced (temp file, fsync, ``os.replace``) with the new rows' metadata
checksums. A crash before (3) leaves bytes and SQLite rows past the committed count,
which every read ignores and the next ``add`` overwrites, so the index reopens as it was
after the last completed ``add``. ``remove`` commits the manifest's record of removed
rows, then flags them in SQLite (no compaction: the codes stay, the search backends drop
them); see :mod:`cxrhash.index.integrity`.

Every write holds ``write.lock`` (:mod:`cxrhash.index.folder`) and is refused when another
process committed since this handle opened the index.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cxrhash.index.checked_meta import CheckedMeta
from cxrhash.index.codes import pack_codes
from cxrhash.index.errors import (
    ConcurrentWriteError,
    DuplicateCaseIdError,
    UnknownCaseIdError,
    few,
)
from cxrhash.index.folder import write_lock
from cxrhash.index.integrity import ranges_to_rows, rows_to_ranges
from cxrhash.index.manifest import FLOAT_DTYPE, MANIFEST_NAME, Manifest, read_manifest
from cxrhash.index.meta import ItemRow
from cxrhash.index.shards import ShardStore


@dataclass(frozen=True)
class Batch:
    """The checked items of one ``add``: codes, their float16 rows (with a float store), the
    case ids as given and as stored, findings, patient pseudonyms and the source paths kept."""

    codes: np.ndarray
    floats: np.ndarray | None
    case_ids: list[str]
    stored_ids: list[str]
    findings: list[str]
    patient_hashes: list[str | None]
    source_paths: list[str | None]

    def item_rows(self, start: int) -> list[ItemRow]:
        """The metadata rows of the batch when its first row is ``start``."""
        return [
            (start + i, stored, finding, patient, source)
            for i, (stored, finding, patient, source) in enumerate(
                zip(
                    self.stored_ids,
                    self.findings,
                    self.patient_hashes,
                    self.source_paths,
                    strict=True,
                )
            )
        ]


def check_case_ids(
    case_ids: Sequence[str],
    n: int,
    findings: Sequence[str],
    patient_ids: Sequence[str | None] | None,
    source_paths: Sequence[str | os.PathLike[str] | None] | None,
) -> list[str]:
    """The case ids of an ``add`` of ``n`` codes as strings, after checking that every
    argument has ``n`` entries and no case id repeats (DuplicateCaseIdError)."""
    ids = [str(c) for c in case_ids]
    for name, values in (
        ("case_ids", ids),
        ("findings", findings),
        ("patient_ids", patient_ids),
        ("source_paths", source_paths),
    ):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries but packed_codes has {n} rows")
    reject_repeats(ids, "in this batch")
    return ids


def reject_repeats(case_ids: list[str], where: str) -> None:
    """DuplicateCaseIdError listing the case ids that occur more than once ``where``."""
    repeated = [c for c, times in Counter(case_ids).items() if times > 1]
    if repeated:
        raise DuplicateCaseIdError(
            f"{len(repeated)} case id(s) occur more than once {where}: {few(repeated)}"
        )


def check_floats(
    floats: np.ndarray | None, codes: np.ndarray, manifest: Manifest, path: Path
) -> np.ndarray | None:
    """The float rows of an ``add`` as ``<f2``, checked against the index and the codes
    (``None`` for an index without a float store, which refuses them)."""
    if not manifest.floats:
        if floats is not None:
            raise ValueError(
                f"the index at {path} stores no float outputs (it was created "
                "without store_floats / --store-floats); add the codes alone"
            )
        return None
    if floats is None:
        raise ValueError(
            f"the index at {path} stores float outputs (created with "
            "--store-floats): pass each item's float outputs (floats=, n×k) with its code"
        )
    arr = np.asarray(floats)
    bits = manifest.bits
    if arr.ndim != 2 or arr.shape != (len(codes), bits):
        raise ValueError(
            f"floats must be {len(codes)}×{bits} (one row of {bits} outputs per "
            f"code), got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"floats must be a float array, got {arr.dtype}")
    with np.errstate(over="ignore"):  # an overflow becomes inf, reported below
        rows16 = arr.astype(FLOAT_DTYPE)
    bad = np.flatnonzero(~np.isfinite(rows16).all(axis=1))
    if len(bad):
        raise ValueError(
            f"floats row {int(bad[0])} is not finite in float16 (NaN, or beyond ±65504)"
        )
    wrong = np.flatnonzero((pack_codes(arr >= 0) != codes).any(axis=1))
    if len(wrong):
        raise ValueError(
            f"floats row {int(wrong[0])} does not match its code: the codes must be "
            "pack_codes(floats >= 0) (are the rows in the same order?)"
        )
    return rows16


class IndexWriter:
    """Adds and removes the rows of one open index, under its write lock."""

    def __init__(self, path: Path, shards: ShardStore, meta: CheckedMeta) -> None:
        self.path = path
        self._shards = shards
        self._meta = meta

    def add(self, batch: Batch) -> None:
        """Append ``batch`` in the three steps of the module docstring.

        Raises:
            DuplicateCaseIdError: a case id is already indexed.
            ConcurrentWriteError: another process is writing, or wrote since ``open``.
            IndexCorruptError: the metadata rows sharing a checksum block with the new
                ones fail their SHA-256 (nothing is written).
        """
        with self._locked():
            present = self._meta.live_rows(batch.stored_ids)
            if present:
                listed = [
                    c for c, s in zip(batch.case_ids, batch.stored_ids, strict=True) if s in present
                ]
                raise DuplicateCaseIdError(
                    f"{len(listed)} case id(s) are already in the index at {self.path}: "
                    f"{few(listed)}"
                )
            base = self._shards.manifest
            start, end = base.count, base.count + len(batch.codes)
            if start > base.meta.start:  # the new rows may share a block with checked ones
                self._meta.check(np.array([start - 1]), base.meta)
            staged = self._shards.stage(batch.codes, batch.floats)
            self._insert_rows(start, batch.item_rows(start))
            seal, fresh = self._meta.extended_seal(base.meta, start, end)
            self._commit(replace(staged, meta=seal, removed=base.removed))
            self._meta.mark_checked(fresh)

    def remove(self, case_ids: list[str], stored_ids: list[str]) -> np.ndarray:
        """Record the rows of ``case_ids`` (stored as ``stored_ids``) as removed, then flag
        them in SQLite; returns those rows, ascending.

        Raises:
            UnknownCaseIdError: a case id is not in the index (nothing is removed).
        """
        with self._locked():
            found = self._meta.live_rows(stored_ids)
            unknown = [c for c, s in zip(case_ids, stored_ids, strict=True) if s not in found]
            if unknown:
                raise UnknownCaseIdError(
                    f"cannot remove {len(unknown)} case id(s) that are not in the index at "
                    f"{self.path} (never added, or removed already): {few(unknown)}"
                )
            rows = np.sort(np.fromiter(found.values(), dtype=np.int64, count=len(found)))
            removed = np.union1d(self._shards.removed, rows)
            self._commit(replace(self._shards.manifest, removed=rows_to_ranges(removed)))
            self._meta.store.mark_deleted(rows)  # the mirror; a crash before it is repaired later
        return rows

    def _insert_rows(self, start: int, rows: list[ItemRow]) -> None:
        """Step 2 of ``add``: the metadata in one transaction."""
        self._meta.store.insert(start, rows)

    def _commit(self, manifest: Manifest) -> None:
        """Step 3 of ``add``, the commit point: replace the manifest."""
        self._shards.commit(manifest)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the write lock, refuse if another process committed since ``open``, and
        flag in SQLite the removed rows an interrupted ``remove`` left unflagged."""
        with write_lock(self.path, "writing"):
            on_disk = read_manifest(self.path / MANIFEST_NAME)
            mine = self._shards.manifest
            if (on_disk.shards, on_disk.removed, on_disk.meta) != (
                mine.shards,
                mine.removed,
                mine.meta,
            ):
                gone = len(ranges_to_rows(on_disk.removed))
                raise ConcurrentWriteError(
                    f"the index at {self.path} was changed by another process since it was "
                    f"opened (it now holds {on_disk.count} rows, {gone} removed; this handle "
                    f"{mine.count} rows, {len(self._shards.removed)} removed); open it again"
                )
            if len(self._shards.removed):
                self._meta.store.mark_deleted(self._shards.removed)
            yield
