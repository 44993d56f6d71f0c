"""Shared parts of the approximate FAISS backends (``hnsw``, ``multihash``, ``ivf``).

FAISS labels their results by position (or, for IVF, by the id given at add
time); :func:`order_hits` maps those to ids and sorts each row by
(distance, id) with missing hits (label −1) padded at the end. The FAISS index
itself is saved whole (``faiss.serialize_index_binary``), so a graph or a
trained quantizer is not rebuilt on load.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import faiss
import numpy as np

from cxrhash.index.backends.base import PAD_DIST, PAD_ID, HammingBackend


def order_hits(dists: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (distance, id); entries with id −1 go last as −1 / −1."""
    missing = ids < 0
    key_d = np.where(missing, np.iinfo(np.int64).max, dists.astype(np.int64))
    order = np.lexsort((ids, key_d), axis=-1)
    ids = np.take_along_axis(ids, order, 1)
    dists = np.take_along_axis(dists, order, 1).astype(np.int32)
    missing = ids < 0
    ids[missing], dists[missing] = PAD_ID, PAD_DIST
    return ids, dists


def serialize(index: faiss.IndexBinary) -> np.ndarray:
    """The FAISS index as a ``uint8`` array, for ``np.savez``."""
    return np.asarray(faiss.serialize_index_binary(index), dtype=np.uint8)


def deserialize(blob: np.ndarray, kind: type, d: int) -> faiss.IndexBinary:
    """Read a :func:`serialize` blob; ValueError unless it is a ``kind`` with ``d`` bits."""
    try:
        index = faiss.deserialize_index_binary(np.ascontiguousarray(blob, dtype=np.uint8))
    except RuntimeError as err:
        raise ValueError(f"unreadable FAISS index: {err}") from err
    if not isinstance(index, kind) or index.d != d:
        raise ValueError(f"expected a {kind.__name__} of {d} bits, found {type(index).__name__}")
    return index


class PositionalFaissBackend(HammingBackend):
    """A FAISS index labelled by position, with a position → id array.

    For indexes without ``remove_ids`` (HNSW, multi-hash): removal rebuilds the
    index from the remaining codes, read back from its flat ``storage``.
    """

    def __init__(self, bits: int) -> None:
        super().__init__(bits)
        self._index: Any = self._new_index()  # FAISS's stubs lack the subclass attributes
        self._pos_ids = np.empty(0, dtype=np.int64)

    @abstractmethod
    def _new_index(self) -> faiss.IndexBinary:
        """An empty FAISS index with this backend's parameters."""

    @property
    @abstractmethod
    def _faiss_type(self) -> type:
        """The FAISS class of ``_index``, checked on load."""

    def _apply_search_params(self) -> None:  # noqa: B027 - optional hook
        """Copy search-time parameters onto ``_index`` (after load)."""

    def _add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        self._index.add(codes)
        self._pos_ids = np.concatenate([self._pos_ids, ids])

    def _remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self._pos_ids, ids)
        storage = faiss.downcast_IndexBinary(self._index.storage)
        codes = storage.reconstruct_n(0, storage.ntotal)[keep]
        self._index = self._new_index()
        if len(codes):
            self._index.add(np.ascontiguousarray(codes))
        self._pos_ids = self._pos_ids[keep]

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dists, labels = self._index.search(queries, k)
        ids = np.where(labels >= 0, self._pos_ids[np.maximum(labels, 0)], PAD_ID)
        return order_hits(dists, ids)

    def _state(self) -> dict[str, np.ndarray]:
        return {"faiss": serialize(self._index), "ids": self._pos_ids}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        index = deserialize(arrays["faiss"], self._faiss_type, 8 * self.code_bytes)
        ids = arrays["ids"]
        self._set_ids(ids)
        if index.ntotal != len(ids):
            raise ValueError(
                f"the FAISS index holds {index.ntotal} codes but there are {len(ids)} ids"
            )
        self._index, self._pos_ids = index, ids
        self._apply_search_params()
