"""The read side of an open index: its facts, Hamming and two-stage search, metadata, checks.

Nothing here needs the pseudonym key: :class:`IndexReader` is what searching an index
takes. :class:`~cxrhash.index.store.HashIndex` extends it with creating and opening an
index, writing, and the look-ups by source case id, which need the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import numpy as np

from cxrhash.index.checked_meta import CheckedMeta, verify_index
from cxrhash.index.codes import check_packed
from cxrhash.index.errors import HashIndexError
from cxrhash.index.hits import SearchHit, hits_per_query
from cxrhash.index.integrity import IntegrityReport
from cxrhash.index.manifest import MANIFEST_NAME, read_manifest
from cxrhash.index.meta import RowMeta
from cxrhash.index.opening import IndexParts
from cxrhash.index.rerank import (
    asymmetric_scores,
    check_mode,
    check_query_floats,
    cosine_scores,
    rerank_shortlist,
    shortlist_length,
)
from cxrhash.index.shard_search import ShardSearch
from cxrhash.index.writing import Batch


class IndexReader:
    """Search and metadata of an open index (built by ``HashIndex.open`` and kin).

    With an exact backend (``exact`` on its class: ``backend_names(exact=True)``) results
    equal :func:`cxrhash.index.codes.hamming_rank` over the items not removed: ascending
    distance, ties broken by insertion order.
    """

    def __init__(self, parts: IndexParts) -> None:
        self._path = parts.path
        self._shards = parts.shards
        self._meta = parts.meta
        self._checked_meta = CheckedMeta(parts.path, parts.shards, parts.meta)
        self._shard_search = ShardSearch(parts.path, parts.shards, parts.backend, parts.params)

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
        meta = self._checked_meta.lookup(rows[rows >= 0])  # row-major
        return hits_per_query(rows, dists, scores, meta)

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
        queries = check_packed(query_packed, self.bits, "query_packed")
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
        queries = check_packed(query_packed, self.bits, "query_packed")
        keep = min(int(k), len(self))
        if keep == 0 or len(queries) == 0:
            shape = (len(queries), keep)
            return np.empty(shape, np.int64), np.empty(shape, np.int32)
        return self._shard_search.search(queries, keep)

    def iter_metadata(self) -> Iterator[tuple[int, str, str]]:
        """Yield ``(row, case_id, findings)`` for every item not removed, in insertion order
        (after checking every metadata block's SHA-256)."""
        return self._checked_meta.items()

    def stored_batch(self, lo: int, hi: int) -> Batch:
        """The items not removed in rows ``[lo, hi)`` as the index stores them (codes, float
        rows with a float store, stored ids, findings, patient pseudonyms, kept paths; the
        metadata checked), for :meth:`HashIndex.add_stored` into an index made with the
        same key: how the parts of a distributed build become one index. Needs no key."""
        items = self._checked_meta.item_rows(lo, hi)
        rows = np.array([item[0] for item in items], np.int64)
        stored = [item[1] for item in items]
        return Batch(
            codes=self._shards.gather(rows),
            floats=self._shards.gather(rows, floats=True) if self.stores_floats else None,
            case_ids=stored,
            stored_ids=stored,
            findings=[item[2] for item in items],
            patient_hashes=[item[3] for item in items],
            source_paths=[item[4] for item in items],
        )

    def stored_present(self, stored_ids: list[str]) -> list[bool]:
        """For each stored id (as :meth:`search` returns it), whether a live row holds it."""
        found = self._checked_meta.live_rows(stored_ids)
        return [s in found for s in stored_ids]

    def case(self, stored_id: str) -> RowMeta | None:
        """``(case_id, findings, source_path)`` of the live item stored under ``stored_id``
        (the id :meth:`search` returns: a pseudonym, or the source id in an index that keeps
        source names), or ``None`` when there is none. Needs no key."""
        found = self._checked_meta.live_rows([stored_id])
        if stored_id not in found:
            return None
        return self._checked_meta.lookup(np.array([found[stored_id]], np.int64))[0]

    def is_current(self) -> bool:
        """Whether the index on disk is still the one this handle serves: ``False`` once
        another process committed an add or a removal since it was opened (open the index
        again to see it; this handle keeps serving its own committed state)."""
        on_disk = read_manifest(self._path / MANIFEST_NAME)
        mine = self._shards.manifest
        return (on_disk.shards, on_disk.removed, on_disk.meta) == (
            mine.shards,
            mine.removed,
            mine.meta,
        )

    def verify(self) -> IntegrityReport:
        """Check everything: every shard's CRC-32s, every metadata block's SHA-256 (read
        again, whatever was checked before) and the ``deleted`` flags against the manifest.

        Corruption is listed in the report's ``problems``, not raised, so that one run
        names every damaged file and block. A backend that keeps its codes in a server
        (``milvus``) has its copy compared with the shards too: ids or codes that are not
        the index's are problems, rows not sent yet are notes.
        """
        report = verify_index(self._path, self._shards, self._meta)
        problems, notes = self._shard_search.mirror_report()
        report.problems += problems
        report.notes += notes
        return report

    def sync_backends(self) -> None:
        """Bring the search backends up to date with every committed row now instead of at
        the next search; a server backend (``milvus``) is sent the new codes and flushed."""
        self._shard_search.sync()

    def save_backends(self) -> list[Path]:
        """Save each shard's search backend beside it, for later opens to load, not rebuild.

        ``shards/NNNN.<backend>.npz`` plus a ``.json`` sidecar with the shard's
        committed rows and CRC-32 at saving time. A saved backend is used only
        while its shard is unchanged (so every full shard, for good), and removals
        made since are applied to it. Worth it for the approximate backends, whose
        build is slow; ``flat`` rebuilds from the memory map about as fast as it loads.
        """
        return self._shard_search.save()

    def __len__(self) -> int:
        """Searchable items: committed rows minus removed ones."""
        return self.n_rows - len(self._shards.removed)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self._path)!r}, bits={self.bits}, items={len(self)}, "
            f"shards={self.n_shards}, backend={self.backend!r})"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the SQLite connection and drop the in-memory backends (the index stays on disk)."""
        self._meta.close()
        self._shard_search.close()

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
        return self._shard_search.name

    @property
    def backend_params(self) -> dict[str, Any]:
        """Parameters of this session's search backend."""
        return dict(self._shard_search.params)

    @property
    def codes(self) -> np.ndarray:
        """All ``n_rows`` packed codes by id, removed ones included (read-only memory map
        for one shard, an in-memory copy for several)."""
        return self._shards.all_codes()

    @property
    def keeps_source_names(self) -> bool:
        """Whether case ids and source paths are stored as given (else keyed pseudonyms)."""
        return self._shards.manifest.source_names

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
