"""Case metadata of a hash index in SQLite: one row per code, keyed by its id.

Table ``items(row, case_id, findings, patient_hash, source_path, deleted)``;
``row`` is the code's id. A case id is unique among the rows not removed
(a partial unique index), so a removed case can be indexed again.

Which rows are removed is recorded in the manifest (:mod:`cxrhash.index.integrity`);
``deleted`` mirrors that record for the unique index, and reads here that filter on it
are narrowed by the caller to the record. :meth:`MetaStore.digest` is the SHA-256 the
manifest keeps per block of rows, over the columns that never change after a commit.

Rows at or beyond the manifest's committed count belong to an interrupted
add: every read here takes the committed count and ignores them, and the next
:meth:`MetaStore.insert` deletes them in its own transaction. Reads never
write, so a reader opening the index while a writer is between its SQLite
commit and its manifest commit cannot damage the writer's state.

Sets of rows or case ids are passed as one JSON array parameter
(``IN (SELECT value FROM json_each(?))``): one query per call, whatever its size.

Reading a search's hits from SQLite costs ~10 µs a row, so :meth:`MetaStore.lookup`
serves them from memory: up to ``memory_rows`` committed rows (default 2^22, one
default shard) as a compact :class:`~cxrhash.index.meta_table.MetaTable` loaded at
the first search and extended as rows are committed; beyond that, the metadata of
up to ``cache_rows`` recently returned rows (hits repeat: the lowest ids of a large
cluster of equal codes answer every query near it). A committed row's case id,
findings and path never change, so neither needs invalidation beyond dropping rows
an interrupted add may rewrite.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from hashlib import sha256
from pathlib import Path

import numpy as np

from cxrhash.index.errors import IndexCorruptError
from cxrhash.index.meta_table import MetaTable

META_NAME = "meta.sqlite"

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS items (
        row INTEGER PRIMARY KEY,
        case_id TEXT NOT NULL,
        findings TEXT,
        patient_hash TEXT,
        source_path TEXT,
        deleted INTEGER NOT NULL DEFAULT 0
    )
    """,
    "CREATE UNIQUE INDEX IF NOT EXISTS live_case_id ON items(case_id) WHERE deleted = 0",
)
_COLUMNS = "row, case_id, findings, patient_hash, source_path, deleted"
#: The canonical encoding of a row for :meth:`MetaStore.digest`: its immutable columns as
#: SQL literals (``quote``: ``'text'`` with ``''`` escaped, ``NULL``, integers in decimal),
#: comma-separated, one line per row. A new immutable column must be added here.
_SEALED_LINE = "||','||".join(
    f"quote({c})" for c in ("row", "case_id", "findings", "patient_hash", "source_path")
)
_DIGEST_CHUNK = 1 << 14
_IN_JSON = "IN (SELECT value FROM json_each(?))"

#: ``(row, case_id, findings, patient_hash, source_path)`` of one new item.
ItemRow = tuple[int, str, str, str | None, str | None]
#: ``(case_id, findings, source_path)`` returned for a row by :meth:`MetaStore.lookup`.
RowMeta = tuple[str, str, str | None]
DEFAULT_CACHE_ROWS = 1 << 17
DEFAULT_MEMORY_ROWS = 1 << 22


class MetaStore:
    """The SQLite metadata of one index directory."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        cache_rows: int = DEFAULT_CACHE_ROWS,
        memory_rows: int = DEFAULT_MEMORY_ROWS,
    ) -> None:
        self.path = path
        self._conn = conn
        self.cache_rows = cache_rows
        self.memory_rows = memory_rows
        self._cache: dict[int, RowMeta] = {}
        self._table: MetaTable | None = None

    @classmethod
    def create(cls, path: Path) -> MetaStore:
        """A new, empty database."""
        conn = sqlite3.connect(path)
        with conn:
            for statement in _SCHEMA:
                conn.execute(statement)
        return cls(path, conn)

    @classmethod
    def open(cls, path: Path, count: int, manifest_name: str) -> MetaStore:
        """Open the database and check that it holds exactly the rows ``0 … count − 1``.

        Raises:
            IndexCorruptError: the file is missing, not a database of this schema,
                or lacks committed rows.
        """
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing")
        conn = sqlite3.connect(path)
        try:
            conn.execute(f"SELECT {_COLUMNS} FROM items LIMIT 0")
            (kept,) = conn.execute("SELECT COUNT(*) FROM items WHERE row < ?", (count,)).fetchone()
        except sqlite3.DatabaseError as err:
            conn.close()
            raise IndexCorruptError(f"{path} is not a readable index database: {err}") from err
        if kept != count:
            conn.close()
            raise IndexCorruptError(
                f"{path} holds {kept} items but {manifest_name} records {count}"
            )
        return cls(path, conn)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def insert(self, start: int, rows: Sequence[ItemRow]) -> None:
        """Insert new items in one transaction, dropping leftovers of an interrupted add first."""
        for row in [r for r in self._cache if r >= start]:
            del self._cache[row]
        if self._table is not None:
            self._table.truncate(start)
        with self._conn:
            self._conn.execute("DELETE FROM items WHERE row >= ?", (start,))
            self._conn.executemany(
                "INSERT INTO items (row, case_id, findings, patient_hash, source_path) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def live_rows(self, case_ids: Sequence[str], count: int) -> dict[str, int]:
        """``case_id → row`` for those of ``case_ids`` that are committed and not removed."""
        cur = self._conn.execute(
            f"SELECT case_id, row FROM items WHERE deleted = 0 AND row < ? AND case_id {_IN_JSON}",
            (count, json.dumps(list(case_ids))),
        )
        return dict(cur.fetchall())

    def mark_deleted(self, rows: np.ndarray) -> None:
        """Flag rows removed (those not flagged yet), in one transaction."""
        with self._conn:
            self._conn.execute(
                f"UPDATE items SET deleted = 1 WHERE deleted = 0 AND row {_IN_JSON}",
                (json.dumps(rows.tolist()),),
            )

    def digest(self, lo: int, hi: int) -> str:
        """SHA-256 (hex) of rows ``[lo, hi)``'s immutable columns in the canonical encoding.

        Raises:
            IndexCorruptError: the database cannot be read.
        """
        h = sha256()
        try:
            for start in range(lo, hi, _DIGEST_CHUNK):
                cur = self._conn.execute(
                    f"SELECT {_SEALED_LINE} FROM items WHERE row >= ? AND row < ? ORDER BY row",
                    (start, min(hi, start + _DIGEST_CHUNK)),
                )
                h.update("".join(f"{line}\n" for (line,) in cur).encode("utf-8"))
        except sqlite3.DatabaseError as err:
            raise IndexCorruptError(f"{self.path} is not a readable index database: {err}") from err
        return h.hexdigest()

    def deleted_rows(self, lo: int, hi: int) -> np.ndarray:
        """The removed rows in ``[lo, hi)``, ascending."""
        cur = self._conn.execute(
            "SELECT row FROM items WHERE deleted = 1 AND row >= ? AND row < ? ORDER BY row",
            (lo, hi),
        )
        return np.array([r for (r,) in cur], dtype=np.int64)

    def lookup(self, rows: np.ndarray, count: int) -> list[RowMeta]:
        """``(case_id, findings, source_path)`` of each of ``rows``, in order (repeats allowed).

        ``rows`` must be committed (below ``count``, the committed row count). Rows
        not in memory are read in one query.
        """
        table = self._memory_table(count)
        if table is not None:
            return table.records(rows)
        wanted = rows.tolist()
        cache = self._cache
        missing = sorted(set(wanted).difference(cache))
        if not missing:
            return [cache[r] for r in wanted]
        cur = self._conn.execute(
            f"SELECT row, case_id, findings, source_path FROM items WHERE row {_IN_JSON}",
            (json.dumps(missing),),
        )
        found = {r: (c, f, p) for r, c, f, p in cur}
        out = [found[r] if r in found else cache[r] for r in wanted]
        if len(missing) <= self.cache_rows:
            if len(cache) + len(missing) > self.cache_rows:
                cache.clear()
            cache.update(found)
        return out

    def _memory_table(self, count: int) -> MetaTable | None:
        """The in-memory table extended to ``count`` rows, or None above ``memory_rows``."""
        if count > self.memory_rows:
            self._table = None
            return None
        table = self._table if self._table is not None else MetaTable()
        if len(table) < count:
            cur = self._conn.execute(
                "SELECT case_id, findings, source_path FROM items "
                "WHERE row >= ? AND row < ? ORDER BY row",
                (len(table), count),
            )
            try:
                table.append(cur)
            except ValueError:  # a separator inside a field: serve this store from SQLite
                self.memory_rows = -1
                self._table = None
                return None
        self._table = table
        return table

    def iter_items(self, count: int) -> Iterator[tuple[int, str, str]]:
        """``(row, case_id, findings)`` of every committed item not removed, by row."""
        yield from self._conn.execute(
            "SELECT row, case_id, findings FROM items WHERE deleted = 0 AND row < ? ORDER BY row",
            (count,),
        )

    def item_rows(self, lo: int, hi: int) -> list[ItemRow]:
        """``(row, case_id, findings, patient_hash, source_path)`` of the items not removed in
        ``[lo, hi)`` (committed rows: the caller bounds ``hi``), by row."""
        cur = self._conn.execute(
            "SELECT row, case_id, findings, patient_hash, source_path FROM items "
            "WHERE deleted = 0 AND row >= ? AND row < ? ORDER BY row",
            (lo, hi),
        )
        return cur.fetchall()
