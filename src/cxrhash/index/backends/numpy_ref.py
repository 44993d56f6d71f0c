"""The exact reference backend: every distance in numpy, then a (distance, id) sort.

Slow (Q×N distances, a full sort per query) but obviously right; the other
backends are tested against it.
"""

from __future__ import annotations

import numpy as np

from cxrhash.index.backends.base import BACKENDS, HammingBackend
from cxrhash.index.codes import hamming_distances


@BACKENDS.register("numpy")
class NumpyBackend(HammingBackend):
    """Exact brute force: ``popcount(q XOR x)`` for every item, ``np.lexsort`` by (distance, id)."""

    name = "numpy"
    exact = True
    summary = (
        "every distance in numpy, then a (distance, id) sort: the reference the others "
        "are tested against"
    )

    def __init__(self, bits: int) -> None:
        super().__init__(bits)
        self._item_ids = np.empty(0, dtype=np.int64)  # in insertion order
        self._codes = np.empty((0, self.code_bytes), dtype=np.uint8)

    def _add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        self._item_ids = np.concatenate([self._item_ids, ids])
        self._codes = np.concatenate([self._codes, codes])

    def _remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self._item_ids, ids)
        self._item_ids = self._item_ids[keep]
        self._codes = self._codes[keep]

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dists = hamming_distances(queries, self._codes)
        item_ids = np.broadcast_to(self._item_ids, dists.shape)
        order = np.lexsort((item_ids, dists), axis=-1)[:, :k]
        return np.take_along_axis(item_ids, order, 1), np.take_along_axis(dists, order, 1)

    def _state(self) -> dict[str, np.ndarray]:
        return {"ids": self._item_ids, "codes": self._codes}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        ids, codes = arrays["ids"], arrays["codes"]
        self._set_ids(ids)
        self._codes = self.check_codes(codes, "stored codes")
        if len(self._codes) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(self._codes)} codes")
        self._item_ids = ids
