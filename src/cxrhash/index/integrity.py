"""Checksums of an index's metadata and the record of its removed rows (issue #11, finding 6).

The CRC-32s in ``index.json`` cover the codes; this module covers ``meta.sqlite``.

**Metadata blocks.** Committed rows fall in fixed blocks of ``block_rows`` rows (block b:
rows ``[b·B, (b+1)·B)``). ``index.json`` records the SHA-256 of each block's immutable
columns (``row, case_id, findings, patient_hash, source_path``, encoded by
:meth:`cxrhash.index.meta.MetaStore.digest`). ``add`` recomputes the digests of the blocks
it writes into (after checking the old rows of a partial last block) and commits them in
the same manifest replace as its codes, so rows and digests become visible together.
Fixed blocks rather than one digest per ``add``: the manifest stays small when films are
added one at a time, and checking one block costs a bounded ~10 ms (4096 rows).

Every row is covered (``start`` is 0: indexes without checksums, formats 2/3, are refused
and must be re-indexed, so no row can be declared unverified).

**Removals.** ``deleted`` changes after a row's commit, so it is not in the digests.
The removed rows are recorded in ``index.json`` itself (as ``[start, end)`` ranges); every
read takes them from there. The ``deleted`` column is a mirror kept for SQLite's unique
index of live case ids: ``remove`` commits the manifest first, then sets the flags, and
each writer first re-flags rows the record lists (a crash between the two steps leaves
flags behind the record, which reads ignore). A flag set on a row the record calls live
can only come from an edit, and is reported as corruption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_BLOCK_ROWS = 4096
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class MetaSeal:
    """The metadata checksums of ``index.json``: rows from ``start`` on, one SHA-256 (hex)
    per block of ``block_rows`` rows, the first and last blocks clipped to the rows held."""

    start: int
    block_rows: int = DEFAULT_BLOCK_ROWS
    digests: tuple[str, ...] = ()

    def n_blocks(self, count: int) -> int:
        """How many digests cover rows ``[start, count)``."""
        if count <= self.start:
            return 0
        return -(-count // self.block_rows) - self.start // self.block_rows

    def block_index(self, rows: np.ndarray) -> np.ndarray:
        """The digest index of each of ``rows`` (all at or above ``start``)."""
        return np.asarray(rows, np.int64) // self.block_rows - self.start // self.block_rows

    def block_range(self, i: int, count: int) -> tuple[int, int]:
        """Rows ``[lo, hi)`` covered by digest ``i`` when ``count`` rows are committed."""
        b = self.start // self.block_rows + i
        return max(b * self.block_rows, self.start), min((b + 1) * self.block_rows, count)

    def to_json(self) -> dict[str, Any]:
        """The ``metadata`` object of ``index.json``."""
        return {
            "checksum": "sha256",
            "block_rows": self.block_rows,
            "start": self.start,
            "digests": list(self.digests),
        }

    @classmethod
    def from_json(cls, data: Any, count: int) -> MetaSeal:
        """Parse the ``metadata`` object; ValueError if malformed or not covering ``count`` rows."""
        if not isinstance(data, dict) or data.get("checksum") != "sha256":
            raise ValueError(f"metadata {str(data)[:80]!r} is not a sha256 checksum record")
        start, block_rows, digests = data["start"], data["block_rows"], data["digests"]
        if start != 0 or isinstance(start, bool):  # every row is covered, none exempt
            raise ValueError(f"metadata start must be 0, got {start!r}")
        if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
            raise ValueError(f"metadata block_rows must be an integer ≥ 1, got {block_rows!r}")
        if not isinstance(digests, list) or not all(
            isinstance(d, str) and len(d) == 64 and set(d) <= _HEX for d in digests
        ):
            raise ValueError("metadata digests must be a list of hex SHA-256 strings")
        seal = cls(start, block_rows, tuple(digests))
        if start > count or len(digests) != seal.n_blocks(count):
            raise ValueError(
                f"{len(digests)} metadata digests from row {start} do not cover the "
                f"{count} committed rows in blocks of {block_rows}"
            )
        return seal


def rows_to_ranges(rows: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Rows as sorted ``(start, end)`` runs: ``[9, 3, 4, 5]`` → ``((3, 6), (9, 10))``."""
    rows = np.unique(np.asarray(rows, np.int64))
    if not len(rows):
        return ()
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = rows[np.r_[0, breaks]]
    ends = rows[np.r_[breaks - 1, len(rows) - 1]] + 1
    return tuple(zip(starts.tolist(), ends.tolist(), strict=True))


def ranges_to_rows(ranges: Sequence[tuple[int, int]]) -> np.ndarray:
    """The sorted rows of ``(start, end)`` runs (inverse of :func:`rows_to_ranges`)."""
    if not ranges:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges])


def parse_ranges(data: Any, count: int) -> tuple[tuple[int, int], ...]:
    """The ``removed`` list of ``index.json``; ValueError unless sorted disjoint runs in
    ``[0, count)``."""
    if not isinstance(data, list):
        raise ValueError(f"removed must be a list of [start, end) pairs, got {str(data)[:80]!r}")
    out: list[tuple[int, int]] = []
    end = 0
    for item in data:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
            or not end <= item[0] < item[1] <= count
        ):
            raise ValueError(
                f"removed holds {item!r}: not a sorted, disjoint [start, end) run of rows "
                f"below {count}"
            )
        out.append((item[0], item[1]))
        end = item[1]
    return tuple(out)


def row_span(lo: int, hi: int) -> str:
    """Rows ``[lo, hi)`` for a message: ``"rows 4096–8191"`` (``"row 7"`` for one)."""
    return f"row {lo}" if hi - lo == 1 else f"rows {lo}–{hi - 1}"


def few_rows(rows: np.ndarray, limit: int = 5) -> str:
    """Up to ``limit`` runs of ``rows`` for a message, with a count of the rest."""
    runs = rows_to_ranges(rows)
    shown = ", ".join(row_span(a, b).split(" ", 1)[1] for a, b in runs[:limit])
    more = f", … ({len(runs) - limit} more runs)" if len(runs) > limit else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {shown}{more}"


@dataclass
class IntegrityReport:
    """What a full check of an index found (:meth:`cxrhash.index.store.HashIndex.verify`).

    ``problems`` are corruption (the CLI exits non-zero); ``notes`` are states that are
    not, such as rows indexed before metadata checksums existed.
    """

    path: Path
    rows: int
    removed: int
    verified_rows: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No corruption found."""
        return not self.problems

    def lines(self) -> list[str]:
        """``OK …`` as one line, or ``CORRUPT …`` followed by one line per problem."""
        if not self.ok:
            return [f"CORRUPT {self.path}: {len(self.problems)} problem(s)"] + [
                f"  {p}" for p in self.problems
            ]
        if self.verified_rows == self.rows:
            meta = f", the metadata of all {self.rows} rows matches its SHA-256s"
        elif self.verified_rows:
            meta = (
                f", the metadata of {self.verified_rows} of {self.rows} rows matches its SHA-256s"
            )
        else:
            meta = ""
        notes = "".join(f"; {n}" for n in self.notes)
        return [
            f"OK {self.path}: {self.rows} rows ({self.removed} removed); the codes match their "
            f"CRC-32s{meta}{notes}"
        ]
