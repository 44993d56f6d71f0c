"""Approximate search with FAISS ``IndexBinaryIVF`` (inverted lists over binary k-means cells).

The coarse quantizer is trained once, on a random sample of the *first* add
(so that batch should be representative and hold at least ``nlist`` codes).
Items are stored under their own ids (``add_with_ids``), so FAISS removes them
in place and returns ids directly.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from cxrhash.index.backends.approximate import deserialize, order_hits, serialize
from cxrhash.index.backends.base import BACKENDS, HammingBackend


@BACKENDS.register("ivf")
class IVFBackend(HammingBackend):
    """Inverted-file search (approximate); results sorted by (distance, id).

    Args:
        bits: code length.
        nlist: number of k-means cells.
        nprobe: cells visited per query (recall ↑, speed ↓).
        train_size: most codes used to train the quantizer (default ``256·nlist``).
        seed: seed of the training sample and of FAISS k-means.
    """

    name = "ivf"
    exact = False
    summary = "FAISS `IndexBinaryIVF`: inverted lists over binary k-means cells"
    search_params = frozenset({"nprobe"})

    def __init__(
        self,
        bits: int,
        *,
        nlist: int = 256,
        nprobe: int = 8,
        train_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(bits)
        if nlist < 1 or nprobe < 1:
            raise ValueError(f"nlist and nprobe must be >= 1, got nlist={nlist}, nprobe={nprobe}")
        self.nlist, self._nprobe, self.seed = nlist, nprobe, seed
        self.train_size = 256 * nlist if train_size is None else train_size
        if self.train_size < nlist:
            raise ValueError(f"train_size ({self.train_size}) must be >= nlist ({nlist})")
        self._quantizer = faiss.IndexBinaryFlat(8 * self.code_bytes)  # the IVF index borrows it
        # Typed Any: FAISS's stubs lack the IVF attributes of a deserialized index.
        self._index: Any = faiss.IndexBinaryIVF(self._quantizer, 8 * self.code_bytes, nlist)
        self._index.cp.seed = seed
        self._index.nprobe = nprobe

    @property
    def params(self) -> dict[str, int]:
        return {
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "train_size": self.train_size,
            "seed": self.seed,
        }

    @property
    def nprobe(self) -> int:
        """Cells visited per query; settable."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = int(value)
        self._index.nprobe = self._nprobe

    @property
    def is_trained(self) -> bool:
        """Whether the quantizer has been trained (by the first add)."""
        return bool(self._index.is_trained)

    def _add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        if not self._index.is_trained:
            if len(codes) < self.nlist:
                raise ValueError(
                    f"the first add trains the ivf quantizer and needs at least nlist={self.nlist} "
                    f"codes, got {len(codes)}"
                )
            rng = np.random.default_rng(self.seed)
            sample = rng.choice(len(codes), size=min(self.train_size, len(codes)), replace=False)
            self._index.train(np.ascontiguousarray(codes[np.sort(sample)]))
        self._index.add_with_ids(codes, ids)

    def _remove(self, ids: np.ndarray) -> None:
        self._index.remove_ids(faiss.IDSelectorBatch(ids))

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dists, ids = self._index.search(queries, k)
        return order_hits(dists, ids)

    def _state(self) -> dict[str, np.ndarray]:
        return {"faiss": serialize(self._index), "ids": self._ids}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        index: Any = deserialize(arrays["faiss"], faiss.IndexBinaryIVF, 8 * self.code_bytes)
        ids = self._set_ids(arrays["ids"])
        if index.ntotal != len(ids) or index.nlist != self.nlist:
            raise ValueError(
                f"the FAISS index holds {index.ntotal} codes in {index.nlist} lists, "
                f"expected {len(ids)} in {self.nlist}"
            )
        self._index, self._quantizer = index, index.quantizer
        self._index.nprobe = self._nprobe
