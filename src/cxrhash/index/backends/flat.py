"""Exact search with FAISS ``IndexBinaryFlat``, ties in id order.

The codes sit in the FAISS index in ascending id order, so a FAISS position is
the rank of an id and ``self._ids[position]`` is the id itself. FAISS's result
heap (``faiss/utils/Heap.h``, ``cmp2``; checked with FAISS 1.15.1) keeps, among
equal distances, the lowest positions and returns them in position order; with
positions in id order that *is* the (distance, id) order, at no extra cost.

That property is probed once per process (``tie_check="auto"``). Should a
FAISS build lack it, the boundary is corrected instead (``"rerank"``): FAISS is
asked for k + 1 neighbours, the rows are sorted by (distance, position), and
only a query whose (k+1)-th distance equals its k-th (an ambiguous boundary
group) gets a ``range_search`` at radius d_k + 1 whose hits are sorted exactly.

Adding ids above the current maximum appends (O(n)); adding a smaller id
rebuilds the index in id order (O(N)). Removal compacts the index in place.
"""

from __future__ import annotations

import functools
import logging

import faiss
import numpy as np

from cxrhash.index.backends.base import BACKENDS, HammingBackend
from cxrhash.index.codes import hamming_rank

LOG = logging.getLogger(__name__)

TIE_CHECKS = ("auto", "faiss", "rerank")


@BACKENDS.register("flat")
class FlatBackend(HammingBackend):
    """Exact brute-force search in FAISS; results equal the numpy reference, ties included.

    Args:
        bits: code length.
        tie_check: ``"faiss"`` trusts FAISS's (distance, position) tie order,
            ``"rerank"`` corrects ambiguous boundary groups with a range search,
            ``"auto"`` (default) picks ``"faiss"`` if a probe confirms it.
    """

    name = "flat"
    exact = True
    summary = "FAISS `IndexBinaryFlat` brute force; any codes"
    search_params = frozenset({"tie_check"})

    def __init__(self, bits: int, *, tie_check: str = "auto") -> None:
        super().__init__(bits)
        if tie_check not in TIE_CHECKS:
            raise ValueError(f"tie_check must be one of {TIE_CHECKS}, got {tie_check!r}")
        self.tie_check = tie_check
        self._rerank = tie_check == "rerank" or (
            tie_check == "auto" and not faiss_orders_ties_by_position()
        )
        self._index = faiss.IndexBinaryFlat(8 * self.code_bytes)

    @property
    def params(self) -> dict[str, str]:
        return {"tie_check": self.tie_check}

    def _add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        if len(self._ids) == 0 or ids[0] > self._ids[-1]:
            self._index.add(codes)
            return
        order = np.argsort(np.concatenate([self._ids, ids]), kind="stable")
        merged = np.concatenate([self._codes(), codes])[order]
        self._index.reset()
        self._index.add(np.ascontiguousarray(merged))

    def _remove(self, ids: np.ndarray) -> None:
        positions = np.searchsorted(self._ids, ids)
        self._index.remove_ids(faiss.IDSelectorBatch(positions))  # keeps the order of the rest

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._rerank:
            return self._search_rerank(queries, k)
        dists, positions = self._index.search(queries, k)
        return self._ids[positions], dists

    def _search_rerank(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        wide = min(k + 1, self._index.ntotal)
        dists, positions = self._index.search(queries, wide)
        order = np.lexsort((positions[:, :k], dists[:, :k]), axis=-1)
        top_pos = np.take_along_axis(positions[:, :k], order, 1)
        top_d = np.take_along_axis(dists[:, :k], order, 1)
        if wide > k:
            kth = dists[:, k - 1]
            ambiguous = np.flatnonzero(dists[:, k] == kth)
            for radius in np.unique(kth[ambiguous]):
                chosen = ambiguous[kth[ambiguous] == radius]
                lims, found_d, found_pos = self._index.range_search(
                    queries[chosen], int(radius) + 1
                )
                for j, row in enumerate(chosen):
                    d = found_d[lims[j] : lims[j + 1]]
                    pos = found_pos[lims[j] : lims[j + 1]]
                    best = np.lexsort((pos, d))[:k]
                    top_pos[row], top_d[row] = pos[best], d[best]
        return self._ids[top_pos], top_d

    def _codes(self) -> np.ndarray:
        n = self._index.ntotal
        if n == 0:
            return np.empty((0, self.code_bytes), dtype=np.uint8)
        return self._index.reconstruct_n(0, n)

    def _state(self) -> dict[str, np.ndarray]:
        return {"ids": self._ids, "codes": self._codes()}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        ids = arrays["ids"]
        if not np.array_equal(self._set_ids(ids), ids):
            raise ValueError("stored ids are not in ascending order")
        codes = self.check_codes(arrays["codes"], "stored codes")
        if len(codes) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(codes)} codes")
        self._index.add(codes)


@functools.cache
def faiss_orders_ties_by_position() -> bool:
    """Whether FAISS binary flat search returns exactly the (distance, position)-stable top-k.

    Probed on 2,000 one-byte codes with only 3 varying bits, so every
    distance is shared by hundreds of items and each k cuts a tie group.
    """
    rng = np.random.default_rng(0)
    db = (rng.integers(0, 8, size=(2000, 1)) << 5).astype(np.uint8)
    queries = (rng.integers(0, 8, size=(16, 1)) << 5).astype(np.uint8)
    index = faiss.IndexBinaryFlat(8)
    index.add(db)
    for k in (1, 7, 300, 2000):
        dists, positions = index.search(queries, k)
        ref_pos, ref_d = hamming_rank(queries, db, k)
        if not (np.array_equal(positions, ref_pos) and np.array_equal(dists, ref_d)):
            LOG.warning("this FAISS build does not order ties by position; re-ranking boundaries")
            return False
    return True
