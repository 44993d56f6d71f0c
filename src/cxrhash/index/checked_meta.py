"""The metadata of an open index as it may be served: checked against the manifest first.

Integrity on open: the manifest's structure, the codes' CRC-32s (``verify=True``), and
that no row is flagged removed in SQLite against the manifest's record
(:func:`check_removal_flags`, one scan of the ``deleted`` column). The metadata SHA-256s
(:mod:`cxrhash.index.integrity`) are checked lazily by :class:`CheckedMeta`, a block
(4096 rows, ~10 ms) the first time one of its rows is served (a search hit,
``contains``, ``remove``; every block before ``iter_metadata``): checking all of them
costs ~2.5 µs a row (~0.25 s per 100k rows), too much for every ``cxrhash search``.
:func:`verify_index` (``cxrhash index --verify``) checks everything.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cxrhash.index.errors import IndexCorruptError
from cxrhash.index.integrity import IntegrityReport, MetaSeal, few_rows, row_span
from cxrhash.index.manifest import MANIFEST_NAME
from cxrhash.index.meta import META_NAME, ItemRow, MetaStore, RowMeta
from cxrhash.index.shards import ShardStore


class CheckedMeta:
    """An index's :class:`MetaStore`, serving a row only once the SHA-256 of its block of
    rows matched the manifest (each block checked once per open handle)."""

    def __init__(self, path: Path, shards: ShardStore, store: MetaStore) -> None:
        self.path = path
        self.store = store
        self._shards = shards
        self._checked: set[int] = set()  # metadata blocks whose SHA-256 was checked

    def check(self, rows: np.ndarray, seal: MetaSeal | None = None) -> None:
        """Check the SHA-256 of each block holding one of ``rows`` (against ``seal``,
        default the committed one); IndexCorruptError naming the rows if one fails."""
        seal = seal if seal is not None else self._shards.manifest.meta
        if not len(rows):
            return
        self.check_blocks(np.unique(seal.block_index(rows[rows >= seal.start])).tolist(), seal)

    def check_blocks(self, blocks: Sequence[int], seal: MetaSeal) -> None:
        """:meth:`check` for the digest indices ``blocks``."""
        count = self._shards.manifest.count
        for i in blocks:
            if i in self._checked:
                continue
            lo, hi = seal.block_range(i, count)
            if self.store.digest(lo, hi) != seal.digests[i]:
                raise IndexCorruptError(
                    f"the index at {self.path} is damaged: {meta_mismatch(lo, hi)}, so it "
                    "is not served; restore the folder from a backup or re-index (`cxrhash "
                    f"index --verify --index {self.path}` lists every damaged block)"
                )
            self._checked.add(i)

    def mark_checked(self, blocks: range) -> None:
        """Record blocks whose digests this handle just computed and committed."""
        self._checked.update(blocks)

    def extended_seal(self, seal: MetaSeal, start: int, end: int) -> tuple[MetaSeal, range]:
        """``seal`` with the digests of the blocks holding rows ``[start, end)`` (re)computed
        from SQLite (the block of ``start`` was checked before being extended), and the
        indices of those blocks."""
        first = int(seal.block_index(np.array([start]))[0])
        fresh = range(first, seal.n_blocks(end))
        digests = seal.digests[:first] + tuple(
            self.store.digest(*seal.block_range(i, end)) for i in fresh
        )
        return replace(seal, digests=digests), fresh

    def live_rows(self, stored_ids: Sequence[str]) -> dict[str, int]:
        """``case_id → row`` of the committed, not removed rows of ``stored_ids`` (checked)."""
        removed = self._shards.removed
        found = self.store.live_rows(stored_ids, self._shards.manifest.count)
        if len(removed) and found:  # flags behind the record: an interrupted remove
            gone = set(np.intersect1d(list(found.values()), removed).tolist())
            found = {c: r for c, r in found.items() if r not in gone}
        self.check(np.fromiter(found.values(), np.int64, len(found)))
        return found

    def lookup(self, rows: np.ndarray) -> list[RowMeta]:
        """``(case_id, findings, source_path)`` of committed ``rows`` in order (checked)."""
        self.check(rows)
        return self.store.lookup(rows, self._shards.manifest.count)

    def item_rows(self, lo: int, hi: int) -> list[ItemRow]:
        """Every column of the items not removed in committed rows ``[lo, hi)`` (checked)."""
        hi = min(hi, self._shards.manifest.count)
        if hi <= lo:
            return []
        self.check(np.arange(lo, hi, dtype=np.int64))
        gone = self._shards.removed
        removed = set(gone[(gone >= lo) & (gone < hi)].tolist())
        return [r for r in self.store.item_rows(lo, hi) if r[0] not in removed]

    def items(self) -> Iterator[tuple[int, str, str]]:
        """``(row, case_id, findings)`` of every item not removed, in insertion order (after
        checking every block)."""
        seal, count = self._shards.manifest.meta, self._shards.manifest.count
        self.check_blocks(range(seal.n_blocks(count)), seal)
        removed = set(self._shards.removed.tolist())
        for item in self.store.iter_items(count):
            if item[0] not in removed:
                yield item


def check_removal_flags(path: Path, shards: ShardStore, store: MetaStore) -> None:
    """IndexCorruptError if SQLite flags as removed a row the manifest records as live."""
    flagged = store.deleted_rows(0, shards.manifest.count)
    edited = np.setdiff1d(flagged, shards.removed)
    if len(edited):
        raise IndexCorruptError(
            f"the index at {path} is damaged: {META_NAME} flags as removed {few_rows(edited)}, "
            f"which {MANIFEST_NAME} records as live (the deleted column was edited); restore "
            "the folder from a backup or re-index"
        )


def verify_index(path: Path, shards: ShardStore, store: MetaStore) -> IntegrityReport:
    """Check everything: every shard's CRC-32s, every metadata block's SHA-256 (read again,
    whatever was checked before) and the ``deleted`` flags against the manifest; every
    problem is listed in the report, none raised."""
    manifest, count = shards.manifest, shards.manifest.count
    problems = shards.problems()
    notes = []
    seal, verified = manifest.meta, 0
    bad: list[tuple[int, int]] = []
    for i in range(seal.n_blocks(count)):
        lo, hi = seal.block_range(i, count)
        if store.digest(lo, hi) == seal.digests[i]:
            verified += hi - lo
        elif bad and bad[-1][1] == lo:
            bad[-1] = (bad[-1][0], hi)
        else:
            bad.append((lo, hi))
    problems += [meta_mismatch(lo, hi) for lo, hi in bad]
    behind = np.setdiff1d(shards.removed, store.deleted_rows(0, count))
    if len(behind):
        notes.append(
            f"{MANIFEST_NAME} records as removed {few_rows(behind)}, not yet flagged in "
            f"{META_NAME} (an interrupted remove, or an edit; the record applies and the "
            "next write flags them)"
        )
    return IntegrityReport(path, count, len(shards.removed), verified, problems, notes)


def meta_mismatch(lo: int, hi: int) -> str:
    """What is wrong with metadata rows ``[lo, hi)`` that fail their SHA-256."""
    return (
        f"the metadata of {row_span(lo, hi)} in {META_NAME} (case ids, findings, patient "
        f"pseudonyms, image paths) does not match its SHA-256 in {MANIFEST_NAME}: edited or "
        "damaged after indexing"
    )
