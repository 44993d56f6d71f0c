"""A persistent, sharded index of packed hash codes with case metadata (SPEC §5).

An index is a directory::

    DIR/index.json          the manifest and commit point: format version, bits,
                            model id, pseudonym key id, shard size, search backend + params,
                            per shard its committed rows and their CRC-32, the
                            SHA-256 of every block of metadata rows, the removed rows
    DIR/shards/NNNN.codes   shard NNNN: raw uint8 rows of ids [NNNN·S, (NNNN+1)·S),
                            B bytes each, append-only, memory-mapped for reading
    DIR/shards/NNNN.f16     optional (``store_floats``): the same rows' float outputs,
                            raw little-endian float16, 2·k bytes each
    DIR/meta.sqlite         items(row, case_id, findings, patient_hash, source_path, deleted)
    DIR/write.lock          flock-ed by the one process creating, adding or removing

A code's id is its row number: insertion order, so ties by id are SPEC §5's
"database order". ``add`` is atomic: (1) the rows (codes, and float rows where
stored) are appended to the shard files and fsync-ed, (2) their metadata
inserted in one SQLite transaction,
(3) ``index.json`` replaced (temp file, fsync, ``os.replace``) with the new rows'
metadata checksums. A crash before (3) leaves bytes and SQLite rows past the
committed count, which every read ignores and the next ``add`` overwrites, so the
index reopens as it was after the last completed ``add``. ``remove`` commits the
manifest's record of removed rows, then flags them in SQLite (no compaction: the
codes stay, the search backends drop them); see :mod:`cxrhash.index.integrity`.

Of processes racing to create one index exactly one does (:mod:`cxrhash.index.folder`);
the others get :class:`IndexExistsError` or :class:`ConcurrentWriteError`, or, with
``open_or_create``, open the winner's index once its manifest is there.

Integrity on open: the codes' CRC-32s (``verify=True``), the manifest's structure, and
that no row is flagged removed in SQLite against the manifest's record (one scan of the
``deleted`` column, as before). The metadata SHA-256s are checked lazily, a block
(4096 rows, ~10 ms) the first time one of its rows is served (a search hit, ``contains``,
``remove``; every block before ``iter_metadata``): checking all of them costs ~2.5 µs a
row (~0.25 s per 100k rows), too much for every ``cxrhash search``. :meth:`HashIndex.verify`
(``cxrhash index --verify``) checks everything.

Search fans out over one backend per shard (``flat`` by default; ``distinct``
and the approximate ones selectable), each built from its shard's memory map
at the first search after ``open`` or ``add`` (so bulk indexing never pays for
it), and merges the per-shard top-k exactly by (distance, id). A two-stage
search (:mod:`cxrhash.index.rerank`) re-ranks the L best of that merge by the
query's float outputs (against the codes, or the stored float rows). The metadata of
the hits comes from memory (a compact copy of up to 2^22 rows' metadata,
loaded at the first search), beyond that from one SQL query per batch through a
cache of recently returned rows.

Nothing in the folder identifies a patient (:mod:`cxrhash.index.pseudonyms`): patient
ids are stored as HMAC-SHA256 pseudonyms under a key kept outside the folder, and so are
case ids, with no source paths, unless the index was created with ``source_names``
(the user's opt-in to keep file names and paths). Searching needs no key; adding,
``contains`` and ``remove`` take the source case ids and need the key the index was made
with.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cxrhash.index.backends import HammingBackend, create_backend, load_backend
from cxrhash.index.codes import code_bytes, pack_codes
from cxrhash.index.errors import (
    ConcurrentWriteError,
    DuplicateCaseIdError,
    HashIndexError,
    IndexCorruptError,
    IndexExistsError,
    IndexMismatchError,
    UnknownCaseIdError,
    few,
)
from cxrhash.index.folder import LOCK_NAME, check_empty, write_lock
from cxrhash.index.integrity import (
    DEFAULT_BLOCK_ROWS,
    IntegrityReport,
    MetaSeal,
    few_rows,
    ranges_to_rows,
    row_span,
    rows_to_ranges,
)
from cxrhash.index.meta import META_NAME, ItemRow, MetaStore
from cxrhash.index.pseudonyms import KEY_FILE_ENV, Pseudonymizer, load_pseudonymizer
from cxrhash.index.rerank import (
    asymmetric_scores,
    check_mode,
    check_query_floats,
    cosine_scores,
    rerank_shortlist,
    shortlist_length,
)
from cxrhash.index.shards import (
    DEFAULT_SHARD_SIZE,
    FLOAT_DTYPE,
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    ShardStore,
    read_manifest,
    write_json_atomic,
)

LOG = logging.getLogger(__name__)

DEFAULT_BACKEND = "flat"
#: Backends that can serve a shard (milvus keeps its own copy of the codes in a server).
STORE_BACKENDS = ("flat", "distinct", "numpy", "hnsw", "ivf", "multihash")

__all__ = [
    "DEFAULT_BACKEND",
    "DEFAULT_SHARD_SIZE",
    "STORE_BACKENDS",
    "ConcurrentWriteError",
    "DuplicateCaseIdError",
    "HashIndex",
    "HashIndexError",
    "IndexCorruptError",
    "IndexExistsError",
    "IndexMismatchError",
    "IntegrityReport",
    "SearchHit",
    "UnknownCaseIdError",
]


class SearchHit(NamedTuple):
    """One search result: its rank (0 = best), database row (= id), Hamming distance,
    metadata, and the re-rank score of a two-stage search (``None`` without one).

    A named tuple rather than a frozen dataclass: building k of them per query
    is part of the search time the store must keep near FAISS's.
    """

    rank: int
    row: int
    case_id: str
    distance: int
    findings: str
    source_path: str | None = None
    score: float | None = None


class HashIndex:
    """Hamming search over an on-disk, sharded store of packed codes with case metadata.

    Build with :meth:`create`, :meth:`open` or :meth:`open_or_create`, not with
    the constructor. With an exact backend (``flat``, ``distinct``, ``numpy``)
    results equal :func:`cxrhash.index.codes.hamming_rank` over the items not
    removed: ascending distance, ties broken by insertion order.
    """

    def __init__(
        self,
        path: Path,
        shards: ShardStore,
        meta: MetaStore,
        backend: str,
        params: dict[str, Any],
        removed: np.ndarray,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        self._path = path
        self._shards = shards
        self._meta = meta
        self._backend_name = backend
        self._backend_params = params
        self._backends: list[HammingBackend] = []  # one per shard, built by _synced_backends
        self._synced: list[int] = []  # rows of each shard already in its backend
        self._removed = removed  # sorted removed rows: the manifest's record (see integrity)
        self._checked: set[int] = set()  # metadata blocks whose SHA-256 was checked
        self._pseudonymizer = pseudonymizer

    # ------------------------------------------------------------------ building

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        bits: int,
        model_id: str,
        *,
        backend: str = DEFAULT_BACKEND,
        backend_params: dict[str, Any] | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        store_floats: bool = False,
        source_names: bool = False,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> HashIndex:
        """Create an empty index in a new or empty directory.

        Args:
            path: the index directory (created with its parents if needed).
            bits: code length k.
            model_id: identifies the checkpoint that makes the codes.
            backend: search backend of every shard (one of ``STORE_BACKENDS``).
            backend_params: its constructor parameters (recorded in the manifest).
            shard_size: most codes per shard file.
            store_floats: also store every item's float outputs (float16, 2·k bytes per
                item) for ``search(rerank="floats")``; ``add`` then requires them.
            source_names: keep case ids and source paths as given (opt-in: a file name
                or path may identify the patient); else case ids are stored as keyed
                pseudonyms and paths are dropped.
            pseudonymizer: the key's pseudonymizer (default: this machine's key,
                :func:`~cxrhash.index.pseudonyms.load_pseudonymizer`).

        Raises:
            IndexExistsError: ``path`` is a file, an index already, or a folder holding
                other files.
            ConcurrentWriteError: another process is creating (or writing) an index there.
            HashIndexError: the folder cannot be made (permissions, a file on the way).
            ValueError: bad bits, backend, parameters or shard size.
        """
        path = Path(path)
        code_bytes(bits)  # validates bits
        params = _check_backend(backend, bits, backend_params)
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
        if path.exists() and not path.is_dir():
            raise IndexExistsError(
                f"cannot create a hash index at {path}: it is a file, not a folder; "
                "choose a new folder for the index"
            )
        pseudonymizer = pseudonymizer or load_pseudonymizer(forbid_under=path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HashIndexError(
                f"cannot create the index folder {path}: {err.strerror or err}"
            ) from err
        had_lock = (path / LOCK_NAME).exists()
        check_empty(path, had_lock, clean=False)  # before leaving a lock file in a user's folder
        with write_lock(path, "creating or writing"):
            check_empty(path, had_lock, clean=True)
            meta = MetaStore.create(path / META_NAME)
            manifest = Manifest(
                bits=int(bits),
                model_id=str(model_id),
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                key_id=pseudonymizer.key_id,
                shard_size=shard_size,
                backend=backend,
                backend_params=params,
                floats=bool(store_floats),
                source_names=bool(source_names),
                meta=MetaSeal(0, DEFAULT_BLOCK_ROWS),
                removed=(),
            )
            shards = ShardStore.create(path, manifest)  # the manifest is written last
        LOG.info(
            "created %d-bit hash index (%s%s) for model %s at %s",
            bits,
            backend,
            ", float store" if store_floats else "",
            model_id,
            path,
        )
        return cls(path, shards, meta, backend, params, np.zeros(0, np.int64), pseudonymizer)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        model_id: str | None = None,
        *,
        backend: str | None = None,
        backend_params: dict[str, Any] | None = None,
        verify: bool = True,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> HashIndex:
        """Open an existing index as of its last completed ``add``.

        Args:
            path: the index directory.
            model_id: if given, must equal the model id stored in the index.
            backend: search with this backend instead of the recorded one (this
                session only; the codes on disk do not depend on it).
            backend_params: parameters for this session's backend (default: the
                recorded ones when the backend is the recorded one).
            verify: check every shard's CRC-32 (reads all codes once). The metadata
                SHA-256s are checked as rows are served, and all by :meth:`verify`.
            pseudonymizer: the key for ``add``, ``contains`` and ``remove`` (default:
                this machine's key, loaded at the first of them; searching needs none).

        Raises:
            FileNotFoundError: no index at ``path``.
            IndexMismatchError: ``model_id`` differs from the stored one.
            IndexCorruptError: a file is unreadable, truncated or inconsistent, or a row
                is flagged removed in ``meta.sqlite`` but not in the manifest.
        """
        path = Path(path)
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"no hash index at {path}: {MANIFEST_NAME} not found (create one first)"
            )
        manifest = read_manifest(manifest_path)
        if model_id is not None and model_id != manifest.model_id:
            raise IndexMismatchError(
                f"index at {path} holds codes made by checkpoint {manifest.model_id!r}, "
                f"not by {model_id!r}; re-index with this model or search with that checkpoint"
            )
        shards = ShardStore(path, manifest)
        if verify:
            shards.verify()
        meta = MetaStore.open(path / META_NAME, manifest.count, MANIFEST_NAME)
        name = manifest.backend if backend is None else backend
        base = manifest.backend_params if name == manifest.backend else {}
        try:
            removed = _removal_record(path, manifest, meta)
            params = _check_backend(name, manifest.bits, {**base, **(backend_params or {})})
        except ValueError as err:
            meta.close()
            if isinstance(err, IndexCorruptError):
                raise
            if backend is None and backend_params is None:
                raise IndexCorruptError(f"{manifest_path}: bad search backend: {err}") from err
            raise
        return cls(path, shards, meta, name, params, removed, pseudonymizer)

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike[str],
        bits: int,
        model_id: str,
        *,
        backend: str | None = None,
        backend_params: dict[str, Any] | None = None,
        shard_size: int | None = None,
        store_floats: bool | None = None,
        source_names: bool | None = None,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> HashIndex:
        """Open the index at ``path`` if there is one (checking bits, model, backend, shard
        size, float store and source names where given), else create it (``flat``, 2^22
        codes per shard, no float store, pseudonymous case ids by default).
        """
        if not (Path(path) / MANIFEST_NAME).is_file():
            try:
                return cls.create(
                    path,
                    bits,
                    model_id,
                    backend=backend or DEFAULT_BACKEND,
                    backend_params=backend_params,
                    shard_size=shard_size or DEFAULT_SHARD_SIZE,
                    store_floats=bool(store_floats),
                    source_names=bool(source_names),
                    pseudonymizer=pseudonymizer,
                )
            except (IndexExistsError, ConcurrentWriteError):
                if not (Path(path) / MANIFEST_NAME).is_file():
                    raise
                # another process created it meanwhile: open theirs
        index = cls.open(
            path, model_id=model_id, backend_params=backend_params, pseudonymizer=pseudonymizer
        )
        manifest = index._shards.manifest
        problems = []
        if index.bits != bits:
            problems.append(f"holds {index.bits}-bit codes, but {bits} bits were requested")
        if backend is not None and backend != manifest.backend:
            problems.append(
                f"was created with the {manifest.backend!r} backend, not {backend!r} "
                "(the backend is fixed at create; HashIndex.open(backend=...) searches with "
                "another one)"
            )
        if shard_size is not None and shard_size != manifest.shard_size:
            problems.append(f"has shards of {manifest.shard_size} codes, not {shard_size}")
        if store_floats is not None and store_floats != manifest.floats:
            problems.append(
                ("stores no" if store_floats else "stores")
                + " float outputs (the float store is chosen when an index is created: "
                "--store-floats; index into a new directory to change it)"
            )
        if source_names is not None and source_names != manifest.source_names:
            problems.append(
                ("keeps" if manifest.source_names else "pseudonymises")
                + " case ids and source paths (chosen when an index is created: "
                "--keep-source-names; index into a new directory to change it)"
            )
        if problems:
            index.close()
            raise IndexMismatchError(f"index at {path} " + "; ".join(problems))
        return index

    def add(
        self,
        packed_codes: np.ndarray,
        case_ids: Sequence[str],
        findings: Sequence[str],
        patient_ids: Sequence[str] | None = None,
        source_paths: Sequence[str | os.PathLike[str] | None] | None = None,
        floats: np.ndarray | None = None,
    ) -> None:
        """Append a batch of cases atomically (cost linear in the batch, not the index).

        Args:
            packed_codes: n×B ``uint8`` codes from :func:`pack_codes`.
            case_ids: n unique case ids, none already in the index.
            findings: n findings strings (e.g. ``"Effusion|Mass"``).
            patient_ids: n patient ids; only their keyed pseudonyms are stored.
            source_paths: n image paths (or None each), stored only by an index that
                keeps source names.
            floats: n×k float outputs whose signs are the codes (``HashOutput.hash``);
                required by an index with a float store (stored as float16), refused
                by one without.

        Raises:
            ValueError: wrong code width, argument lengths, or float rows missing,
                unexpected, of the wrong width, not finite in float16, or whose signs
                are not the codes.
            DuplicateCaseIdError: a case id repeats or is already indexed.
            ConcurrentWriteError: another process is writing, or wrote since ``open``.
            IndexCorruptError: the metadata rows sharing a checksum block with the new
                ones fail their SHA-256 (nothing is written).
        """
        codes = self._check_codes(packed_codes, "packed_codes")
        n = codes.shape[0]
        rows16 = self._check_floats(floats, codes)
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
                f"{len(repeated)} case id(s) occur more than once in this batch: {few(repeated)}"
            )
        if n == 0:
            return
        stored_ids = self._stored_ids(case_ids)
        with self._writing():
            present = self._live_rows(stored_ids)
            if present:
                listed = [c for c, s in zip(case_ids, stored_ids, strict=True) if s in present]
                raise DuplicateCaseIdError(
                    f"{len(listed)} case id(s) are already in the index at {self._path}: "
                    f"{few(listed)}"
                )
            start = self.n_rows
            base = self._shards.manifest
            if start > base.meta.start:  # the new rows may share a block with checked ones
                self._check_meta(np.array([start - 1]), base.meta)
            hashes = [None] * n if patient_ids is None else [*map(self.patient_hash, patient_ids)]
            paths: Sequence[str | os.PathLike[str] | None] = [None] * n
            if source_paths is not None and self._shards.manifest.source_names:
                paths = source_paths
            rows: list[ItemRow] = [
                (start + i, stored_ids[i], str(findings[i]), hashes[i], _opt_str(paths[i]))
                for i in range(n)
            ]
            staged = self._shards.stage(codes, rows16)
            self._insert_rows(start, rows)
            seal, fresh = self._extended_seal(base.meta, start, start + n)
            self._commit(replace(staged, meta=seal, removed=base.removed))
            self._checked.update(fresh)
        LOG.info("added %d codes to %s (now %d rows)", n, self._path, self.n_rows)

    def remove(self, case_ids: Sequence[str]) -> int:
        """Remove cases from search results and metadata (one transaction); returns how many.

        The codes stay in their shard (no compaction); a removed case id may be added again.
        The removal is committed by the manifest's record, then flagged in SQLite.

        Raises:
            UnknownCaseIdError: a case id is not in the index (nothing is removed).
            DuplicateCaseIdError: a case id repeats in ``case_ids``.
            IndexCorruptError: the metadata of a row to remove fails its SHA-256.
        """
        ids = [str(c) for c in case_ids]
        repeated = [c for c, times in Counter(ids).items() if times > 1]
        if repeated:
            raise DuplicateCaseIdError(
                f"{len(repeated)} case id(s) occur more than once in the removal: {few(repeated)}"
            )
        if not ids:
            return 0
        stored_ids = self._stored_ids(ids)
        with self._writing():
            found = self._live_rows(stored_ids)
            unknown = [c for c, s in zip(ids, stored_ids, strict=True) if s not in found]
            if unknown:
                raise UnknownCaseIdError(
                    f"cannot remove {len(unknown)} case id(s) that are not in the index at "
                    f"{self._path} (never added, or removed already): {few(unknown)}"
                )
            rows = np.sort(np.fromiter(found.values(), dtype=np.int64, count=len(found)))
            base = self._shards.manifest
            removed = np.union1d(self._removed, rows)
            self._commit(replace(base, removed=rows_to_ranges(removed)))
            self._removed = removed
            self._meta.mark_deleted(rows)  # the mirror; a crash before it is repaired later
        size = self.shard_size
        for s, backend in enumerate(self._backends):
            mine = rows[(rows >= s * size) & (rows < s * size + self._synced[s])]
            if len(mine):
                backend.remove(mine)
        LOG.info("removed %d cases from %s", len(rows), self._path)
        return len(rows)

    def _stored_ids(self, case_ids: list[str]) -> list[str]:
        if self._shards.manifest.source_names:
            return case_ids
        return [*map(self._pseudonyms().case, case_ids)]

    def _pseudonyms(self) -> Pseudonymizer:
        """The key's pseudonymizer, loaded at first use and checked against the index's key."""
        if self._pseudonymizer is None:
            self._pseudonymizer = load_pseudonymizer(forbid_under=self._path)
        expected = self._shards.manifest.key_id
        if self._pseudonymizer.key_id != expected:
            raise IndexMismatchError(
                f"index at {self._path} was made with pseudonym key {expected!r}, but the key "
                f"from {self._pseudonymizer.source} is {self._pseudonymizer.key_id!r}; point "
                f"{KEY_FILE_ENV} at the key it was made with (a new key would index every "
                "film again under new pseudonyms)"
            )
        return self._pseudonymizer

    # ------------------------------------------------------------------ queries

    def search(
        self,
        query_packed: np.ndarray,
        k: int,
        *,
        rerank: str = "none",
        shortlist: int | None = None,
        query_floats: np.ndarray | None = None,
    ) -> list[list[SearchHit]]:
        """The ``k`` nearest cases per query, with their metadata (from memory, or one SQL query).

        Args:
            query_packed: Q×B packed codes (or one code as a 1-D array).
            k: results per query (fewer when the index holds fewer items).
            rerank: ``none`` (Hamming order, ties by id), or a two-stage search
                (:meth:`search_reranked`): ``asymmetric`` or ``floats``.
            shortlist: the two-stage shortlist L ≥ k (default max(10·k, 100)).
            query_floats: Q×k float outputs of the queries, for a re-rank.

        Returns:
            One list of :class:`SearchHit` per query, best first; ``score`` is the
            re-rank score (``None`` without a re-rank).
        """
        if check_mode(rerank) == "none":
            rows, dists = self.search_packed(query_packed, k)
            scores = None
        else:
            rows, dists, scores = self.search_reranked(
                query_packed, query_floats, k, rerank=rerank, shortlist=shortlist
            )
        found = rows >= 0
        self._check_meta(rows[found])
        meta = self._meta.lookup(rows[found], self.n_rows)  # row-major
        per_query = found.sum(axis=1).tolist()
        q_scores = repeat(repeat(None)) if scores is None else scores.tolist()
        hits, at = [], 0
        make = partial(tuple.__new__, SearchHit)  # SearchHit._make without its Python frame
        for q_rows, q_dists, n, q_score in zip(
            rows.tolist(), dists.tolist(), per_query, q_scores, strict=False
        ):
            # an approximate backend pads at the end only (order_hits)
            case_ids, findings, paths = zip(*meta[at : at + n], strict=True) if n else ((),) * 3
            at += n
            hits.append(
                list(
                    map(
                        make,
                        zip(
                            range(n),
                            q_rows,
                            case_ids,
                            q_dists,
                            findings,
                            paths,
                            q_score,
                            strict=False,
                        ),
                    )
                )
            )
        return hits

    def search_reranked(
        self,
        query_packed: np.ndarray,
        query_floats: np.ndarray | None,
        k: int,
        *,
        rerank: str = "asymmetric",
        shortlist: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Two-stage search without metadata: the L Hamming-nearest (:meth:`search_packed`)
        re-ranked by the queries' float outputs, cut to ``k``.

        ``asymmetric`` scores ⟨f_q, b_i⟩ against the stored codes b_i ∈ {−1, +1}^k;
        ``floats`` the cosine against the stored float16 outputs (an index created with
        ``store_floats``). Higher scores first, ties by Hamming distance, then id
        (:mod:`cxrhash.index.rerank`).

        Returns:
            ``(rows, distances, scores)``: Q×min(k, len(self)) ``int64`` rows, their
            ``int32`` Hamming distances and ``float32`` scores (−1 / −1 / 0 padding as
            :meth:`search_packed`).

        Raises:
            ValueError: unknown mode, shortlist < k, or query floats missing or of the
                wrong shape; HashIndexError: ``floats`` on an index without a float store.
        """
        mode = check_mode(rerank)
        length = shortlist_length(int(k), shortlist)
        queries = self._check_codes(query_packed, "query_packed")
        q_floats = check_query_floats(query_floats, len(queries), self.bits)
        if mode == "floats" and not self.stores_floats:
            raise HashIndexError(
                f"the index at {self._path} stores no float outputs, so it cannot re-rank by "
                "them; create the index with --store-floats (HashIndex.create(store_floats="
                "True)), or re-rank with 'asymmetric', which needs only the codes"
            )
        rows, dists = self.search_packed(queries, length)
        if mode == "asymmetric":
            scores = asymmetric_scores(q_floats, self._shards.gather(rows), self.bits)
        elif mode == "floats":
            scores = cosine_scores(q_floats, self._shards.gather(rows, floats=True))
        else:
            scores = np.zeros(rows.shape, np.float32)
        rows, dists, scores = rerank_shortlist(rows, dists, scores)
        keep = min(int(k), rows.shape[1])
        return rows[:, :keep], dists[:, :keep], scores[:, :keep]

    def search_packed(self, query_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` search without metadata: every shard's backend, merged by (distance, id).

        Returns:
            ``(rows, distances)``: Q×min(k, len(self)) ``int64`` rows and ``int32``
            distances. Exact backends fill every place; an approximate one may
            leave −1 / −1 padding where it found fewer items.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        queries = self._check_codes(query_packed, "query_packed")
        keep = min(int(k), len(self))
        if keep == 0 or len(queries) == 0:
            shape = (len(queries), keep)
            return np.empty(shape, np.int64), np.empty(shape, np.int32)
        parts = [b.search(queries, min(keep, len(b))) for b in self._synced_backends() if len(b)]
        if len(parts) == 1:
            return parts[0]
        return merge_top_k(parts, keep)

    def contains(self, case_ids: Sequence[str]) -> list[bool]:
        """For each case id, whether it is in the index (added and not removed)."""
        ids = self._stored_ids([str(c) for c in case_ids])
        found = self._live_rows(ids)
        return [c in found for c in ids]

    def patient_hash(self, patient_id: str) -> str:
        """The stored pseudonym of a patient id: its keyed HMAC (``p-`` + 32 hex digits)."""
        return self._pseudonyms().patient(str(patient_id))

    def stored_case_id(self, case_id: str) -> str:
        """What the index stores and returns for a source case id: its keyed pseudonym,
        or the id itself in an index that keeps source names."""
        return self._stored_ids([str(case_id)])[0]

    def iter_metadata(self) -> Iterator[tuple[int, str, str]]:
        """Yield ``(row, case_id, findings)`` for every item not removed, in insertion order
        (after checking every metadata block's SHA-256)."""
        seal = self._shards.manifest.meta
        self._check_blocks(range(seal.n_blocks(self.n_rows)), seal)
        removed = set(self._removed.tolist())
        for item in self._meta.iter_items(self.n_rows):
            if item[0] not in removed:
                yield item

    def verify(self) -> IntegrityReport:
        """Check everything: every shard's CRC-32s, every metadata block's SHA-256 (read
        again, whatever was checked before) and the ``deleted`` flags against the manifest.

        Corruption is listed in the report's ``problems``, not raised, so that one run
        names every damaged file and block.
        """
        manifest, count = self._shards.manifest, self.n_rows
        problems = self._shards.problems()
        notes = []
        seal, verified = manifest.meta, 0
        bad: list[tuple[int, int]] = []
        for i in range(seal.n_blocks(count)):
            lo, hi = seal.block_range(i, count)
            if self._meta.digest(lo, hi) == seal.digests[i]:
                verified += hi - lo
            elif bad and bad[-1][1] == lo:
                bad[-1] = (bad[-1][0], hi)
            else:
                bad.append((lo, hi))
        problems += [_meta_mismatch(lo, hi) for lo, hi in bad]
        flagged = self._meta.deleted_rows(0, count)
        behind = np.setdiff1d(self._removed, flagged)
        if len(behind):
            notes.append(
                f"{MANIFEST_NAME} records as removed {few_rows(behind)}, not yet flagged in "
                f"{META_NAME} (an interrupted remove, or an edit; the record applies and the "
                "next write flags them)"
            )
        return IntegrityReport(self._path, count, len(self._removed), verified, problems, notes)

    def save_backends(self) -> list[Path]:
        """Save each shard's search backend beside it, for later opens to load, not rebuild.

        ``shards/NNNN.<backend>.npz`` plus a ``.json`` sidecar with the shard's
        committed rows and CRC-32 at saving time. A saved backend is used only
        while its shard is unchanged (so every full shard, for good), and removals
        made since are applied to it. Worth it for the approximate backends, whose
        build is slow; ``flat`` rebuilds from the memory map about as fast as it loads.
        """
        written = []
        for s, backend in enumerate(self._synced_backends()):
            target = self._saved_backend_path(s)
            backend.save(target)  # then the sidecar: a crash between leaves them unmatched
            write_json_atomic(target.with_suffix(".json"), self._saved_info(s))
            written.append(target)
        return written

    # ------------------------------------------------------------------ properties

    def __len__(self) -> int:
        """Searchable items: committed rows minus removed ones."""
        return self.n_rows - len(self._removed)

    def __repr__(self) -> str:
        return (
            f"HashIndex({str(self._path)!r}, bits={self.bits}, items={len(self)}, "
            f"shards={self.n_shards}, backend={self._backend_name!r})"
        )

    def __enter__(self) -> HashIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the SQLite connection and drop the in-memory backends (the index stays on disk)."""
        self._meta.close()
        self._backends, self._synced = [], []

    @property
    def path(self) -> Path:
        """The index directory."""
        return self._path

    @property
    def bits(self) -> int:
        """Code length k."""
        return self._shards.manifest.bits

    @property
    def code_bytes(self) -> int:
        """Bytes per packed code."""
        return self._shards.manifest.code_bytes

    @property
    def model_id(self) -> str:
        """Identifier of the checkpoint whose codes the index holds."""
        return self._shards.manifest.model_id

    @property
    def n_rows(self) -> int:
        """Committed rows (ids ``0 … n_rows − 1``), removed ones included."""
        return self._shards.manifest.count

    @property
    def shard_size(self) -> int:
        """Most codes per shard."""
        return self._shards.manifest.shard_size

    @property
    def n_shards(self) -> int:
        """Number of shard files."""
        return len(self._shards.manifest.shards)

    @property
    def backend(self) -> str:
        """Name of the search backend of this session."""
        return self._backend_name

    @property
    def backend_params(self) -> dict[str, Any]:
        """Parameters of this session's search backend."""
        return dict(self._backend_params)

    @property
    def codes(self) -> np.ndarray:
        """All ``n_rows`` packed codes by id, removed ones included (read-only memory map
        for one shard, an in-memory copy for several)."""
        return self._shards.all_codes()

    @property
    def stores_floats(self) -> bool:
        """Whether the index keeps every item's float outputs (created with ``store_floats``)."""
        return self._shards.manifest.floats

    @property
    def floats(self) -> np.ndarray:
        """All ``n_rows`` stored float outputs by id (N×k ``<f2``), like :attr:`codes`.

        Raises:
            ValueError: the index stores no float outputs.
        """
        return self._shards.all_floats()

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
        if pad and len(arr):
            bad = np.flatnonzero(arr[:, -1] & np.uint8((1 << pad) - 1))
            if len(bad):
                raise ValueError(
                    f"{name} row {int(bad[0])}: the last {pad} padding bits of a {self.bits}-bit "
                    "code must be zero (pack the codes with pack_codes)"
                )
        return np.ascontiguousarray(arr)

    def _check_floats(self, floats: np.ndarray | None, codes: np.ndarray) -> np.ndarray | None:
        """The float rows of an ``add`` as ``<f2``, checked against the index and the codes."""
        if not self.stores_floats:
            if floats is not None:
                raise ValueError(
                    f"the index at {self._path} stores no float outputs (it was created "
                    "without store_floats / --store-floats); add the codes alone"
                )
            return None
        if floats is None:
            raise ValueError(
                f"the index at {self._path} stores float outputs (created with "
                "--store-floats): pass each item's float outputs (floats=, n×k) with its code"
            )
        arr = np.asarray(floats)
        if arr.ndim != 2 or arr.shape != (len(codes), self.bits):
            raise ValueError(
                f"floats must be {len(codes)}×{self.bits} (one row of {self.bits} outputs per "
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

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the write lock, refuse if another process committed since ``open``, and
        flag in SQLite the removed rows an interrupted ``remove`` left unflagged."""
        with write_lock(self._path, "writing"):
            on_disk = read_manifest(self._path / MANIFEST_NAME)
            mine = self._shards.manifest
            if (on_disk.shards, on_disk.removed, on_disk.meta) != (
                mine.shards,
                mine.removed,
                mine.meta,
            ):
                gone = len(ranges_to_rows(on_disk.removed))
                raise ConcurrentWriteError(
                    f"the index at {self._path} was changed by another process since it was "
                    f"opened (it now holds {on_disk.count} rows, {gone} removed; this handle "
                    f"{self.n_rows} rows, {len(self._removed)} removed); open it again"
                )
            if len(self._removed):
                self._meta.mark_deleted(self._removed)
            yield

    def _extended_seal(self, seal: MetaSeal, start: int, end: int) -> tuple[MetaSeal, range]:
        """``seal`` with the digests of the blocks holding rows ``[start, end)`` (re)computed
        from SQLite (the block of ``start`` was checked before being extended), and the
        indices of those blocks."""
        first = int(seal.block_index(np.array([start]))[0])
        fresh = range(first, seal.n_blocks(end))
        digests = seal.digests[:first] + tuple(
            self._meta.digest(*seal.block_range(i, end)) for i in fresh
        )
        return replace(seal, digests=digests), fresh

    def _check_meta(self, rows: np.ndarray, seal: MetaSeal | None = None) -> None:
        """Check the SHA-256 of each metadata block holding one of ``rows`` (once per block
        and handle) before its rows are served; IndexCorruptError naming the rows if not."""
        seal = seal if seal is not None else self._shards.manifest.meta
        if not len(rows):
            return
        self._check_blocks(np.unique(seal.block_index(rows[rows >= seal.start])).tolist(), seal)

    def _check_blocks(self, blocks: Sequence[int], seal: MetaSeal) -> None:
        """:meth:`_check_meta` for the digest indices ``blocks``."""
        for i in blocks:
            if i in self._checked:
                continue
            lo, hi = seal.block_range(i, self.n_rows)
            if self._meta.digest(lo, hi) != seal.digests[i]:
                raise IndexCorruptError(
                    f"the index at {self._path} is damaged: {_meta_mismatch(lo, hi)}, so it "
                    "is not served; restore the folder from a backup or re-index (`cxrhash "
                    f"index --verify --index {self._path}` lists every damaged block)"
                )
            self._checked.add(i)

    def _live_rows(self, case_ids: Sequence[str]) -> dict[str, int]:
        """``case_id → row`` of the committed, not removed rows of ``case_ids`` (checked)."""
        found = self._meta.live_rows(case_ids, self.n_rows)
        if len(self._removed) and found:  # flags behind the record: an interrupted remove
            gone = set(np.intersect1d(list(found.values()), self._removed).tolist())
            found = {c: r for c, r in found.items() if r not in gone}
        self._check_meta(np.fromiter(found.values(), np.int64, len(found)))
        return found

    def _insert_rows(self, start: int, rows: list[ItemRow]) -> None:
        """Step 2 of ``add``: the metadata in one transaction."""
        self._meta.insert(start, rows)

    def _commit(self, manifest: Manifest) -> None:
        """Step 3 of ``add``, the commit point: replace the manifest."""
        self._shards.commit(manifest)

    def _synced_backends(self) -> list[HammingBackend]:
        """Every shard's backend, after adding the rows committed since it was last brought up
        to date (removed rows left out, read in one SQL query per shard)."""
        size = self.shard_size
        for s, entry in enumerate(self._shards.manifest.shards):
            if s == len(self._backends):
                saved = self._load_saved_backend(s, entry)
                if saved is None:
                    saved = create_backend(self._backend_name, self.bits, **self._backend_params)
                    self._synced.append(0)
                else:
                    self._synced.append(entry.rows)
                self._backends.append(saved)
            done = self._synced[s]
            if done == entry.rows:
                continue
            ids = np.arange(s * size + done, s * size + entry.rows, dtype=np.int64)
            codes = self._shards.shard_codes(s)[done:]
            dead = self._removed_in(int(ids[0]), int(ids[-1]) + 1)
            if len(dead):
                alive = ~np.isin(ids, dead)
                ids, codes = ids[alive], codes[alive]
            try:
                self._backends[s].add(ids, codes)
            except ValueError as err:
                raise HashIndexError(
                    f"cannot build the {self._backend_name} backend of {self._path / entry.file}: "
                    f"{err}"
                ) from err
            self._synced[s] = entry.rows
        return self._backends

    def _removed_in(self, lo: int, hi: int) -> np.ndarray:
        """The removed rows in ``[lo, hi)``, ascending."""
        at = np.searchsorted(self._removed, [lo, hi])
        return self._removed[at[0] : at[1]]

    def _saved_backend_path(self, s: int) -> Path:
        return (self._path / self._shards.manifest.shards[s].file).with_suffix(
            f".{self._backend_name}.npz"
        )

    def _saved_info(self, s: int) -> dict[str, Any]:
        entry = self._shards.manifest.shards[s]
        return {"backend": self._backend_name, "rows": entry.rows, "crc32": entry.crc32}

    def _load_saved_backend(self, s: int, entry: ShardEntry) -> HammingBackend | None:
        """Shard ``s``'s saved backend if saved from exactly its committed rows, else None."""
        target = self._saved_backend_path(s)
        try:
            info = json.loads(target.with_suffix(".json").read_text(encoding="utf-8"))
            if info != self._saved_info(s):
                return None
            backend = load_backend(target, **self._backend_params)
        except (OSError, ValueError) as err:  # missing, stale, corrupt or other parameters
            LOG.info("not using the saved backend %s: %s", target, err)
            return None
        lo = s * self.shard_size
        rows = np.arange(lo, lo + entry.rows, dtype=np.int64)
        dead = self._removed_in(lo, lo + entry.rows)
        stored = backend.ids
        if (
            backend.name != self._backend_name
            or len(np.setdiff1d(stored, rows))
            or len(np.setdiff1d(np.setdiff1d(rows, dead), stored))
        ):
            LOG.warning("%s does not hold the ids of its shard; rebuilding it", target)
            return None
        removed_since = np.intersect1d(stored, dead)
        if len(removed_since):
            backend.remove(removed_since)
        LOG.info("loaded the saved backend %s", target)
        return backend


def merge_top_k(
    parts: Sequence[tuple[np.ndarray, np.ndarray]], keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard Q×k_i ``(ids, distances)`` into the Q×``keep`` best by (distance, id).

    Exact when each part is its shard's exact top-k_i with k_i ≥ min(keep, shard size):
    any item of the global top-``keep`` is in its own shard's top-``keep``.
    Padding (id −1) sorts last.
    """
    ids = np.concatenate([p[0] for p in parts], axis=1)
    dists = np.concatenate([p[1] for p in parts], axis=1)
    sort_d = np.where(ids < 0, np.iinfo(np.int32).max, dists)
    order = np.lexsort((ids, sort_d), axis=-1)[:, :keep]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(dists, order, 1)


def _removal_record(path: Path, manifest: Manifest, meta: MetaStore) -> np.ndarray:
    """The removed rows: the manifest's record, checked against the ``deleted`` flags."""
    flagged = meta.deleted_rows(0, manifest.count)
    removed = ranges_to_rows(manifest.removed)
    edited = np.setdiff1d(flagged, removed)
    if len(edited):
        raise IndexCorruptError(
            f"the index at {path} is damaged: {META_NAME} flags as removed {few_rows(edited)}, "
            f"which {MANIFEST_NAME} records as live (the deleted column was edited); restore "
            "the folder from a backup or re-index"
        )
    return removed


def _meta_mismatch(lo: int, hi: int) -> str:
    """What is wrong with metadata rows ``[lo, hi)`` that fail their SHA-256."""
    return (
        f"the metadata of {row_span(lo, hi)} in {META_NAME} (case ids, findings, patient "
        f"pseudonyms, image paths) does not match its SHA-256 in {MANIFEST_NAME}: edited or "
        "damaged after indexing"
    )


def _check_backend(name: str, bits: int, params: dict[str, Any] | None) -> dict[str, Any]:
    """The full parameters of backend ``name`` (defaults filled in); ValueError if unusable."""
    if name not in STORE_BACKENDS:
        raise ValueError(
            f"backend {name!r} cannot serve the shards of a hash index; choose one of "
            f"{', '.join(STORE_BACKENDS)}"
        )
    try:
        probe = create_backend(name, bits, **(params or {}))
    except TypeError as err:
        raise ValueError(f"bad parameters for the {name} backend: {err}") from err
    return dict(probe.params)


def _check_length(name: str, values: Sequence[Any], expected: int) -> None:
    if len(values) != expected:
        raise ValueError(f"{name} has {len(values)} entries but packed_codes has {expected} rows")


def _opt_str(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else str(value)
