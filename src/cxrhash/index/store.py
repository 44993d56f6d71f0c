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
"database order". :class:`HashIndex` is the one handle on it, made of parts with one job
each: the manifest (:mod:`~cxrhash.index.manifest`) and shard files
(:mod:`~cxrhash.index.shards`); creating and opening (:mod:`~cxrhash.index.opening`);
the write path, atomic and crash-safe (:mod:`~cxrhash.index.writing`); metadata served
only after its checksum is checked (:mod:`~cxrhash.index.checked_meta`); one search
backend per shard, merged exactly (:mod:`~cxrhash.index.shard_search`), and the two-stage
re-rank (:mod:`~cxrhash.index.rerank`). The metadata of the hits comes from memory (a
compact copy of up to 2^22 rows' metadata, loaded at the first search), beyond that from
one SQL query per batch through a cache of recently returned rows.

Nothing in the folder identifies a patient (:mod:`cxrhash.index.pseudonyms`): patient
ids are stored as HMAC-SHA256 pseudonyms under a key kept outside the folder, and so are
case ids, with no source paths, unless the index was created with ``source_names``
(the user's opt-in to keep file names and paths); a film from a PACS keeps its WADO-RS URL
(server and UIDs, no patient data: :mod:`cxrhash.index.pacs_links`). Searching needs no key; adding,
``contains`` and ``remove`` take the source case ids and need the key the index was made
with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cxrhash.index.backends import DEFAULT_BACKEND
from cxrhash.index.codes import check_packed
from cxrhash.index.errors import (
    ConcurrentWriteError,
    DuplicateCaseIdError,
    HashIndexError,
    IndexCorruptError,
    IndexExistsError,
    IndexMismatchError,
    UnknownCaseIdError,
)
from cxrhash.index.hits import SearchHit
from cxrhash.index.integrity import IntegrityReport
from cxrhash.index.manifest import DEFAULT_SHARD_SIZE, MANIFEST_NAME
from cxrhash.index.opening import (
    IndexParts,
    Settings,
    create_parts,
    open_parts,
    settings_mismatches,
)
from cxrhash.index.pacs_links import is_link
from cxrhash.index.pseudonyms import KEY_FILE_ENV, Pseudonymizer, load_pseudonymizer
from cxrhash.index.reader import IndexReader
from cxrhash.index.shard_search import merge_top_k
from cxrhash.index.shards import ShardStore
from cxrhash.index.writing import (
    Batch,
    IndexWriter,
    check_case_ids,
    check_floats,
    reject_repeats,
)

LOG = logging.getLogger(__name__)

#: Importable from here as before the split of this module into its parts.
__all__ = [
    "DEFAULT_BACKEND",
    "DEFAULT_SHARD_SIZE",
    "ConcurrentWriteError",
    "DuplicateCaseIdError",
    "HashIndex",
    "HashIndexError",
    "IndexCorruptError",
    "IndexExistsError",
    "IndexMismatchError",
    "IntegrityReport",
    "SearchHit",
    "ShardStore",
    "UnknownCaseIdError",
    "merge_top_k",
]


class HashIndex(IndexReader):
    """Hamming search over an on-disk, sharded store of packed codes with case metadata.

    Build with :meth:`create`, :meth:`open` or :meth:`open_or_create`, not with the
    constructor. Searching, the index's facts and its checks come from
    :class:`~cxrhash.index.reader.IndexReader`; this class adds writing and the look-ups
    by source case id, which need the pseudonym key.
    """

    def __init__(self, parts: IndexParts) -> None:
        super().__init__(parts)
        self._writer = IndexWriter(parts.path, parts.shards, self._checked_meta)
        self._pseudonymizer = parts.pseudonymizer

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
            backend: search backend of every shard (``backend_names(serves_shard=True)``).
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
        settings = Settings(
            bits=bits,
            model_id=model_id,
            backend=backend,
            backend_params=backend_params,
            shard_size=shard_size,
            store_floats=store_floats,
            source_names=source_names,
        )
        return cls(create_parts(Path(path), settings, pseudonymizer))

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
        parts = open_parts(Path(path), model_id, backend, backend_params, verify, pseudonymizer)
        return cls(parts)

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
        problems = settings_mismatches(
            manifest, bits, backend, shard_size, store_floats, source_names
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
                keeps source names, except WADO-RS instance URLs (:mod:`.pacs_links`),
                which every index keeps.
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
        codes = check_packed(packed_codes, self.bits, "packed_codes")
        n = len(codes)
        rows16 = check_floats(floats, codes, self._shards.manifest, self._path)
        ids = check_case_ids(case_ids, n, findings, patient_ids, source_paths)
        if n == 0:
            return
        stored_ids = self._stored_ids(ids)
        hashes: list[str | None] = [None] * n
        if patient_ids is not None:
            hashes = [*map(self.patient_hash, patient_ids)]
        paths: list[str | None] = [None] * n
        if source_paths is not None:
            keep = self._shards.manifest.source_names
            given = [None if p is None else str(p) for p in source_paths]
            paths = [p if keep or is_link(p) else None for p in given]
        texts = [str(f) for f in findings]
        self._writer.add(Batch(codes, rows16, ids, stored_ids, texts, hashes, paths))
        LOG.info("added %d codes to %s (now %d rows)", n, self._path, self.n_rows)

    def add_stored(self, batch: Batch, key_id: str) -> None:
        """Append rows as another index stored them (:meth:`IndexReader.stored_batch`),
        atomically as :meth:`add`; ``key_id`` is that index's pseudonym key, which must be
        this index's (its pseudonyms are kept as they are). Needs no key itself.

        Raises:
            IndexMismatchError: another key made the rows.
            ValueError, DuplicateCaseIdError, ConcurrentWriteError, IndexCorruptError: as
                :meth:`add`.
        """
        if key_id != self._shards.manifest.key_id:
            raise IndexMismatchError(
                f"rows pseudonymised with key {key_id!r} cannot join the index at "
                f"{self._path}, made with key {self._shards.manifest.key_id!r}"
            )
        codes = check_packed(batch.codes, self.bits, "codes")
        rows16 = check_floats(batch.floats, codes, self._shards.manifest, self._path)
        check_case_ids(
            batch.stored_ids, len(codes), batch.findings, batch.patient_hashes, batch.source_paths
        )
        if len(codes):
            self._writer.add(replace(batch, codes=codes, floats=rows16))
            LOG.info("added %d stored rows to %s (now %d)", len(codes), self._path, self.n_rows)

    @property
    def key_id(self) -> str:
        """The public id of the pseudonym key the index's pseudonyms were made with."""
        return self._shards.manifest.key_id

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
        reject_repeats(ids, "in the removal")
        if not ids:
            return 0
        return self._remove(ids, self._stored_ids(ids))

    def remove_stored(self, stored_ids: Sequence[str]) -> int:
        """:meth:`remove` by the ids the index stores and :meth:`search` returns (pseudonyms,
        or source ids in an index keeping source names): what a client of a search holds.
        Needs no pseudonym key. Raises as :meth:`remove`."""
        ids = [str(c) for c in stored_ids]
        reject_repeats(ids, "in the removal")
        if not ids:
            return 0
        return self._remove(ids, ids)

    def _remove(self, case_ids: list[str], stored_ids: list[str]) -> int:
        rows = self._writer.remove(case_ids, stored_ids)
        self._shard_search.drop(rows)
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

    def contains(self, case_ids: Sequence[str]) -> list[bool]:
        """For each case id, whether it is in the index (added and not removed)."""
        ids = self._stored_ids([str(c) for c in case_ids])
        found = self._checked_meta.live_rows(ids)
        return [c in found for c in ids]

    def patient_hash(self, patient_id: str) -> str:
        """The stored pseudonym of a patient id: its keyed HMAC (``p-`` + 32 hex digits)."""
        return self._pseudonyms().patient(str(patient_id))

    def stored_case_id(self, case_id: str) -> str:
        """What the index stores and returns for a source case id: its keyed pseudonym,
        or the id itself in an index that keeps source names."""
        return self._stored_ids([str(case_id)])[0]
