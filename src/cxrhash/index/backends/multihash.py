"""Approximate search with FAISS ``IndexBinaryMultiHash`` (multi-index hashing).

Each code is cut into ``nhash`` substrings of ``b`` bits, each substring keys a
hash table; a query visits the buckets within ``nflip`` bit flips of its own
substrings and ranks the union exactly. On heavily duplicated codes the bucket
of a common code holds a large share of the database, which is why this can be
slower than a flat scan there. Removal rebuilds the tables.
"""

from __future__ import annotations

import faiss

from cxrhash.index.backends.approximate import PositionalFaissBackend
from cxrhash.index.backends.base import BACKENDS


@BACKENDS.register("multihash")
class MultiHashBackend(PositionalFaissBackend):
    """Multi-index hashing (approximate); results sorted by (distance, id).

    Args:
        bits: code length.
        nhash: number of hash tables.
        b: bits per substring; default ``8·code_bytes // nhash`` (the substrings
            partition the code, as in Norouzi et al.'s multi-index hashing).
        nflip: bit flips explored per substring at search (recall ↑, speed ↓).
    """

    name = "multihash"
    exact = False
    summary = "FAISS `IndexBinaryMultiHash`: multi-index hashing"
    search_params = frozenset({"nflip"})

    def __init__(self, bits: int, *, nhash: int = 4, b: int | None = None, nflip: int = 1) -> None:
        d = 8 * ((bits + 7) // 8)
        b = d // nhash if b is None else b
        if nhash < 1 or b < 1 or nhash * b > d or b > 64:
            raise ValueError(
                f"multihash needs nhash >= 1 and 1 <= b <= 64 with nhash*b <= {d}, "
                f"got nhash={nhash}, b={b}"
            )
        if nflip < 0:
            raise ValueError(f"nflip must be >= 0, got {nflip}")
        self.nhash, self.b, self._nflip = nhash, b, nflip
        super().__init__(bits)

    @property
    def params(self) -> dict[str, int]:
        return {"nhash": self.nhash, "b": self.b, "nflip": self.nflip}

    @property
    def nflip(self) -> int:
        """Bit flips explored per substring; settable."""
        return self._nflip

    @nflip.setter
    def nflip(self, value: int) -> None:
        self._nflip = int(value)
        self._apply_search_params()

    @property
    def _faiss_type(self) -> type:
        return faiss.IndexBinaryMultiHash

    def _new_index(self) -> faiss.IndexBinary:
        index = faiss.IndexBinaryMultiHash(8 * self.code_bytes, self.nhash, self.b)
        index.nflip = self._nflip
        return index

    def _apply_search_params(self) -> None:
        self._index.nflip = self._nflip
