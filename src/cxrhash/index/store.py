"""A persistent on-disk index of packed hash codes with case metadata (SPEC §5).

An index is a directory::

    DIR/index.json   manifest: format version, bits, model id, created, count, salt
    DIR/codes.npy    N×B uint8 packed codes, the source of truth (memory-mapped)
    DIR/meta.sqlite  table items(row, case_id, findings, patient_hash, source_path)

The FAISS ``IndexBinaryFlat`` is not stored: it is rebuilt from ``codes.npy``
on open (a memory copy, linear in N), so there is exactly one copy of the codes
on disk and nothing that can disagree with it.

Crash safety: ``index.json``'s ``count`` is the commit point. An ``add`` first
replaces ``codes.npy`` (temp file + ``os.replace``), then inserts the SQLite
rows in one transaction, then replaces ``index.json`` with the new count.
``open`` trusts the manifest: extra codes beyond ``count`` are ignored and extra
SQLite rows are deleted, so a crash at any point reopens to the last completed
``add``. One writer at a time is assumed.

Patient identifiers are never stored: only ``sha256(salt + patient_id)`` with a
random salt per index, kept in ``index.json``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from cxrhash.index.codes import code_bytes

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "index.json"
CODES_NAME = "codes.npy"
META_NAME = "meta.sqlite"

_SQL_BATCH = 500  # parameters per IN (...) query, below SQLite's limit
_COPY_ROWS = 1 << 20  # rows copied per step when rewriting codes.npy

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    row INTEGER PRIMARY KEY,
    case_id TEXT UNIQUE NOT NULL,
    findings TEXT,
    patient_hash TEXT,
    source_path TEXT
)
"""


class HashIndexError(ValueError):
    """Base class for errors about a hash index or the data given to it."""


class IndexMismatchError(HashIndexError):
    """The index was built by another model (or with another code length)."""


class IndexCorruptError(HashIndexError):
    """A file of the index is missing, truncated or inconsistent with the others."""


class DuplicateCaseIdError(HashIndexError):
    """A case id occurs twice in a batch or is already in the index."""


@dataclass(frozen=True)
class SearchHit:
    """One search result: its rank (0 = best), database row, and metadata."""

    rank: int
    row: int
    case_id: str
    distance: int
    findings: str
    source_path: str | None = None


class HashIndex:
    """Exact Hamming search over an on-disk store of packed codes.

    Build with :meth:`create`, :meth:`open` or :meth:`open_or_create`, not with
    the constructor. Results equal :func:`cxrhash.index.codes.hamming_rank`:
    ascending distance, ties broken by insertion order.
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], codes: np.ndarray, conn: sqlite3.Connection
    ) -> None:
        self._path = path
        self._manifest = manifest
        self._codes = codes
        self._conn = conn
        self._faiss = faiss.IndexBinaryFlat(8 * self.code_bytes)
        if len(codes):
            self._faiss.add(np.ascontiguousarray(codes))

    # ------------------------------------------------------------------ building

    @classmethod
    def create(cls, path: str | os.PathLike[str], bits: int, model_id: str) -> HashIndex:
        """Create an empty index in a new or empty directory.

        Args:
            path: the index directory (created with its parents if needed).
            bits: code length k.
            model_id: identifies the checkpoint that makes the codes.

        Raises:
            FileExistsError: ``path`` is a file or a non-empty directory.
        """
        path = Path(path)
        if path.exists():
            if not path.is_dir():
                raise FileExistsError(f"cannot create a hash index at {path}: it is a file")
            if any(path.iterdir()):
                raise FileExistsError(
                    f"refusing to create a hash index in non-empty directory {path}; "
                    "use HashIndex.open for an existing index or choose an empty directory"
                )
        n_bytes = code_bytes(bits)
        path.mkdir(parents=True, exist_ok=True)
        empty = np.zeros((0, n_bytes), np.uint8)
        _write_codes_file(path / CODES_NAME, empty, empty)
        conn = sqlite3.connect(path / META_NAME)
        with conn:
            conn.execute(_SCHEMA)
        manifest = {
            "format_version": FORMAT_VERSION,
            "bits": int(bits),
            "code_bytes": n_bytes,
            "model_id": str(model_id),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "count": 0,
            "salt": secrets.token_hex(16),
        }
        _write_json_atomic(path / MANIFEST_NAME, manifest)
        LOG.info("created %d-bit hash index for model %s at %s", bits, model_id, path)
        return cls(path, manifest, empty, conn)

    @classmethod
    def open(cls, path: str | os.PathLike[str], model_id: str | None = None) -> HashIndex:
        """Open an existing index, recovering from an interrupted ``add``.

        Args:
            path: the index directory.
            model_id: if given, must equal the model id stored in the index.

        Raises:
            FileNotFoundError: no index at ``path``.
            IndexMismatchError: ``model_id`` differs from the stored one.
            IndexCorruptError: a file is unreadable, truncated or inconsistent.
        """
        path = Path(path)
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"no hash index at {path}: {MANIFEST_NAME} not found (create one first)"
            )
        manifest = _read_manifest(manifest_path)
        if model_id is not None and model_id != manifest["model_id"]:
            raise IndexMismatchError(
                f"index at {path} holds codes made by checkpoint {manifest['model_id']!r}, "
                f"not by {model_id!r}; re-index with this model or search with that checkpoint"
            )
        count = manifest["count"]
        codes = _read_codes(path / CODES_NAME, manifest)
        conn = _open_meta(path / META_NAME, count)
        return cls(path, manifest, codes[:count], conn)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], bits: int, model_id: str) -> HashIndex:
        """Open the index at ``path`` if there is one (checking bits and model), else create it."""
        if (Path(path) / MANIFEST_NAME).is_file():
            index = cls.open(path, model_id=model_id)
            if index.bits != bits:
                stored = index.bits
                index.close()
                raise IndexMismatchError(
                    f"index at {path} holds {stored}-bit codes, but {bits} bits were requested"
                )
            return index
        return cls.create(path, bits, model_id)

    def add(
        self,
        packed_codes: np.ndarray,
        case_ids: Sequence[str],
        findings: Sequence[str],
        patient_ids: Sequence[str] | None = None,
        source_paths: Sequence[str | None] | None = None,
    ) -> None:
        """Append a batch of cases atomically.

        Rewrites ``codes.npy`` completely, so one call costs O(N) disk I/O;
        fine for batch indexing, a sharded store is a later step.

        Args:
            packed_codes: n×B ``uint8`` codes from :func:`pack_codes`.
            case_ids: n unique case ids, none already in the index.
            findings: n findings strings (e.g. ``"Effusion|Mass"``).
            patient_ids: n patient ids; only their salted SHA-256 is stored.
            source_paths: n image paths (or None each), stored as given.

        Raises:
            ValueError: wrong code width or argument lengths.
            DuplicateCaseIdError: a case id repeats or is already indexed.
        """
        codes = self._check_codes(packed_codes, "packed_codes")
        n = codes.shape[0]
        case_ids = [str(c) for c in case_ids]
        _check_length("case_ids", case_ids, n)
        _check_length("findings", findings, n)
        if patient_ids is not None:
            _check_length("patient_ids", patient_ids, n)
        if source_paths is not None:
            _check_length("source_paths", source_paths, n)
        repeated = [c for c, times in Counter(case_ids).items() if times > 1]
        if repeated:
            raise DuplicateCaseIdError(
                f"{len(repeated)} case id(s) occur more than once in this batch: {_few(repeated)}"
            )
        present = [c for c, hit in zip(case_ids, self.contains(case_ids), strict=True) if hit]
        if present:
            raise DuplicateCaseIdError(
                f"{len(present)} case id(s) are already in the index at {self._path}: "
                f"{_few(present)}"
            )
        if n == 0:
            return
        start = len(self)
        hashes = [None] * n if patient_ids is None else [self.patient_hash(p) for p in patient_ids]
        paths = [None] * n if source_paths is None else source_paths
        rows = [
            (start + i, case_ids[i], str(findings[i]), hashes[i], _opt_str(paths[i]))
            for i in range(n)
        ]
        self._write_codes(codes)
        self._insert_rows(start, rows)
        self._write_manifest(start + n)
        self._codes = _read_codes(self._path / CODES_NAME, self._manifest)[: start + n]
        self._faiss.add(codes)
        LOG.info("added %d codes to %s (now %d)", n, self._path, start + n)

    # ------------------------------------------------------------------ queries

    def search(self, query_packed: np.ndarray, k: int) -> list[list[SearchHit]]:
        """The ``k`` nearest cases per query, with their metadata.

        Args:
            query_packed: Q×B packed codes (or one code as a 1-D array).
            k: results per query (fewer when the index holds fewer items).

        Returns:
            One list of :class:`SearchHit` per query, best first.
        """
        rows, dists = self.search_packed(query_packed, k)
        meta = self._metadata(np.unique(rows))
        return [
            [
                SearchHit(
                    rank=j,
                    row=r,
                    case_id=meta[r][0],
                    distance=d,
                    findings=meta[r][1],
                    source_path=meta[r][2],
                )
                for j, (r, d) in enumerate(zip(q_rows, q_dists, strict=True))
            ]
            for q_rows, q_dists in zip(rows.tolist(), dists.tolist(), strict=True)
        ]

    def search_packed(self, query_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact, stable top-``k`` search without metadata (for benchmarks).

        FAISS returns the right distances but may order ties arbitrarily and
        cut them anywhere at the k-th place. So the k-th distance d_k from
        FAISS is used as a radius: every item with distance ≤ d_k is collected
        by ``range_search`` and sorted by (distance, row) before taking k.

        Returns:
            ``(rows, distances)``: Q×min(k, N) ``int64`` rows and ``int32`` distances.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        queries = self._check_codes(query_packed, "query_packed")
        keep = min(k, len(self))
        rows = np.empty((len(queries), keep), dtype=np.int64)
        dists = np.empty((len(queries), keep), dtype=np.int32)
        if keep == 0 or len(queries) == 0:
            return rows, dists
        kth, _ = self._faiss.search(queries, keep)
        kth = kth[:, -1]
        # range_search takes one radius per call: group queries by d_k.
        for radius in np.unique(kth):
            chosen = np.flatnonzero(kth == radius)
            lims, found_d, found_i = self._faiss.range_search(queries[chosen], int(radius) + 1)
            for j, qi in enumerate(chosen):
                d = found_d[lims[j] : lims[j + 1]]
                i = found_i[lims[j] : lims[j + 1]]
                best = np.lexsort((i, d))[:keep]
                rows[qi] = i[best]
                dists[qi] = d[best]
        return rows, dists

    def contains(self, case_ids: Sequence[str]) -> list[bool]:
        """For each case id, whether it is in the index."""
        ids = [str(c) for c in case_ids]
        found: set[str] = set()
        for s in range(0, len(ids), _SQL_BATCH):
            chunk = ids[s : s + _SQL_BATCH]
            marks = ",".join("?" * len(chunk))
            cur = self._conn.execute(
                f"SELECT case_id FROM items WHERE row < ? AND case_id IN ({marks})",
                (len(self), *chunk),
            )
            found.update(r[0] for r in cur)
        return [c in found for c in ids]

    def patient_hash(self, patient_id: str) -> str:
        """The stored pseudonym of a patient id: ``sha256(salt + patient_id)`` in hex."""
        return sha256((self._manifest["salt"] + str(patient_id)).encode("utf-8")).hexdigest()

    def iter_metadata(self) -> Iterator[tuple[int, str, str]]:
        """Yield ``(row, case_id, findings)`` for every item in insertion order."""
        yield from self._conn.execute(
            "SELECT row, case_id, findings FROM items WHERE row < ? ORDER BY row", (len(self),)
        )

    # ------------------------------------------------------------------ properties

    def __len__(self) -> int:
        return int(self._manifest["count"])

    def __enter__(self) -> HashIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the SQLite connection (the index stays valid on disk)."""
        self._conn.close()

    @property
    def path(self) -> Path:
        """The index directory."""
        return self._path

    @property
    def bits(self) -> int:
        """Code length k."""
        return int(self._manifest["bits"])

    @property
    def code_bytes(self) -> int:
        """Bytes per packed code."""
        return int(self._manifest["code_bytes"])

    @property
    def model_id(self) -> str:
        """Identifier of the checkpoint whose codes the index holds."""
        return str(self._manifest["model_id"])

    @property
    def codes(self) -> np.ndarray:
        """The N×B packed codes (read-only, memory-mapped)."""
        return self._codes

    # ------------------------------------------------------------------ internals

    def _check_codes(self, packed: np.ndarray, name: str) -> np.ndarray:
        arr = np.asarray(packed)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"{name} must be N×{self.code_bytes} uint8, got shape {arr.shape}")
        if arr.shape[1] != self.code_bytes:
            raise ValueError(
                f"{name} rows have {arr.shape[1]} bytes ({8 * arr.shape[1]} bits); this index "
                f"expects {self.code_bytes} bytes per code ({self.bits} bits packed with "
                "pack_codes)"
            )
        if arr.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 packed codes (pack_codes), got {arr.dtype}")
        pad = 8 * self.code_bytes - self.bits
        if pad and len(arr) and np.any(arr[:, -1] & np.uint8((1 << pad) - 1)):
            bad = int(np.flatnonzero(arr[:, -1] & np.uint8((1 << pad) - 1))[0])
            raise ValueError(
                f"{name} row {bad}: the last {pad} padding bits of a {self.bits}-bit code "
                "must be zero (pack the codes with pack_codes)"
            )
        return np.ascontiguousarray(arr)

    def _write_codes(self, new_codes: np.ndarray) -> None:
        """Step 1 of ``add``: replace codes.npy by the committed codes + ``new_codes``."""
        _write_codes_file(self._path / CODES_NAME, self._codes, new_codes)

    def _insert_rows(self, start: int, rows: list[tuple[Any, ...]]) -> None:
        """Step 2 of ``add``: one transaction (rows left by an interrupted add are dropped)."""
        with self._conn:
            self._conn.execute("DELETE FROM items WHERE row >= ?", (start,))
            self._conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", rows)

    def _write_manifest(self, count: int) -> None:
        """Step 3 of ``add``, the commit point: record the new count."""
        manifest = {**self._manifest, "count": int(count)}
        _write_json_atomic(self._path / MANIFEST_NAME, manifest)
        self._manifest = manifest

    def _metadata(self, rows: np.ndarray) -> dict[int, tuple[str, str, str | None]]:
        wanted = rows.tolist()
        meta: dict[int, tuple[str, str, str | None]] = {}
        for s in range(0, len(wanted), _SQL_BATCH):
            chunk = wanted[s : s + _SQL_BATCH]
            marks = ",".join("?" * len(chunk))
            cur = self._conn.execute(
                f"SELECT row, case_id, findings, source_path FROM items WHERE row IN ({marks})",
                chunk,
            )
            meta.update((r, (c, f, p)) for r, c, f, p in cur)
        return meta


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IndexCorruptError(f"{manifest_path} is not readable JSON: {err}") from err
    required = ("format_version", "bits", "code_bytes", "model_id", "count", "salt")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise IndexCorruptError(f"{manifest_path} lacks the field(s) {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise IndexCorruptError(
            f"{manifest_path} has format version {manifest['format_version']}, "
            f"this cxrhash reads version {FORMAT_VERSION}"
        )
    if manifest["code_bytes"] != code_bytes(manifest["bits"]):
        raise IndexCorruptError(
            f"{manifest_path}: {manifest['bits']} bits need {code_bytes(manifest['bits'])} "
            f"bytes per code, not {manifest['code_bytes']}"
        )
    return manifest


def _read_codes(codes_path: Path, manifest: dict[str, Any]) -> np.ndarray:
    """Memory-map codes.npy and check it against the manifest."""
    try:
        codes = np.load(codes_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise IndexCorruptError(
            f"{codes_path} is missing, truncated or not a .npy file: {err}"
        ) from err
    width = manifest["code_bytes"]
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != width:
        raise IndexCorruptError(
            f"{codes_path} holds {codes.dtype} {codes.shape}, expected uint8 N×{width}"
        )
    count = manifest["count"]
    if len(codes) < count:
        raise IndexCorruptError(
            f"{codes_path} holds {len(codes)} codes but {MANIFEST_NAME} records {count}"
        )
    if len(codes) > count:
        LOG.warning("%s: ignoring %d codes of an interrupted add", codes_path, len(codes) - count)
    return codes


def _open_meta(meta_path: Path, count: int) -> sqlite3.Connection:
    """Open meta.sqlite, drop rows of an interrupted add, check it holds rows 0..count-1."""
    if not meta_path.is_file():
        raise IndexCorruptError(f"{meta_path} is missing")
    conn = sqlite3.connect(meta_path)
    try:
        with conn:
            dropped = conn.execute("DELETE FROM items WHERE row >= ?", (count,)).rowcount
        (kept,) = conn.execute("SELECT COUNT(*) FROM items").fetchone()
    except sqlite3.DatabaseError as err:
        conn.close()
        raise IndexCorruptError(f"{meta_path} is not a readable index database: {err}") from err
    if dropped:
        LOG.warning("%s: dropped %d rows of an interrupted add", meta_path, dropped)
    if kept != count:
        conn.close()
        raise IndexCorruptError(
            f"{meta_path} holds {kept} items but {MANIFEST_NAME} records {count}"
        )
    return conn


def _write_codes_file(target: Path, old: np.ndarray, new: np.ndarray) -> None:
    """Write ``old`` + ``new`` rows to ``target`` via a temp file and ``os.replace``."""
    width = old.shape[1]
    total = len(old) + len(new)
    tmp = target.with_name(target.name + ".tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total, width))
    for s in range(0, len(old), _COPY_ROWS):
        e = min(s + _COPY_ROWS, len(old))
        out[s:e] = old[s:e]
    if len(new):
        out[len(old) :] = new
    out.flush()
    del out
    _fsync_path(tmp)
    os.replace(tmp, target)
    _fsync_path(target.parent)


def _write_json_atomic(target: Path, payload: dict[str, Any]) -> None:
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    _fsync_path(target.parent)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_length(name: str, values: Sequence[Any], expected: int) -> None:
    if len(values) != expected:
        raise ValueError(f"{name} has {len(values)} entries but packed_codes has {expected} rows")


def _few(values: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", … ({len(values) - limit} more)" if len(values) > limit else "")


def _opt_str(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else str(value)
