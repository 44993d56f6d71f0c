"""Approximate search on a FAISS ``IndexBinaryHNSW`` graph.

Removal rebuilds the graph from the remaining codes (O(N log N)); HNSW suits
an append-mostly store.
"""

from __future__ import annotations

import faiss

from cxrhash.index.backends.approximate import PositionalFaissBackend
from cxrhash.index.backends.base import BACKENDS


@BACKENDS.register("hnsw")
class HNSWBackend(PositionalFaissBackend):
    """HNSW graph search (approximate); results sorted by (distance, id).

    Args:
        bits: code length.
        m: neighbours per node (FAISS ``M``), fixed at construction.
        ef_search: candidate list size at search (FAISS ``efSearch``): recall ↑, speed ↓.
        ef_construction: candidate list size while inserting (``efConstruction``).
    """

    name = "hnsw"
    exact = False
    summary = "FAISS `IndexBinaryHNSW` graph"
    search_params = frozenset({"ef_search", "ef_construction"})

    def __init__(
        self, bits: int, *, m: int = 32, ef_search: int = 64, ef_construction: int = 128
    ) -> None:
        for label, value in (
            ("m", m),
            ("ef_search", ef_search),
            ("ef_construction", ef_construction),
        ):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        self.m, self._ef_search, self._ef_construction = m, ef_search, ef_construction
        super().__init__(bits)

    @property
    def params(self) -> dict[str, int]:
        return {"m": self.m, "ef_search": self.ef_search, "ef_construction": self.ef_construction}

    @property
    def ef_search(self) -> int:
        """Candidate list size at search; settable."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = int(value)
        self._apply_search_params()

    @property
    def ef_construction(self) -> int:
        """Candidate list size used by later adds; settable."""
        return self._ef_construction

    @ef_construction.setter
    def ef_construction(self, value: int) -> None:
        self._ef_construction = int(value)
        self._apply_search_params()

    @property
    def _faiss_type(self) -> type:
        return faiss.IndexBinaryHNSW

    def _new_index(self) -> faiss.IndexBinary:
        index = faiss.IndexBinaryHNSW(8 * self.code_bytes, self.m)
        index.hnsw.efSearch = self._ef_search
        index.hnsw.efConstruction = self._ef_construction
        return index

    def _apply_search_params(self) -> None:
        self._index.hnsw.efSearch = self._ef_search
        self._index.hnsw.efConstruction = self._ef_construction
