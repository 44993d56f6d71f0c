"""Exact search that scans each distinct code once, for databases full of duplicates.

Learned radiograph codes repeat heavily (a large "No Finding" cluster), so the
D distinct codes go into a FAISS ``IndexBinaryFlat`` and the ids of each sit in
a posting list: CSR arrays ``offsets`` (D+1) and ``item_ids`` (N, ascending
within each list). A query searches the distinct codes for its k nearest
(k distinct codes hold at least k items), finds the distance d* at which the
cumulative list sizes reach k, completes the group of distinct codes at d*
with a ``range_search`` when the top-k list may have cut it, and finally ranks
the first ≤ k ids of each candidate list by (distance, id). Results equal the
numpy reference. Search cost is a scan of D codes instead of N.

Before that scan, a query probes the Hamming ball around itself (``probe_radius``,
default 2): a FAISS ``IndexBinaryHash`` over the distinct codes (its buckets keyed
by the first ≤ 64 bits) enumerates every code within r flips for r = 0, 1, …,
and as soon as the complete shells up to r hold at least k items, those shells
contain the exact top-k (everything else is farther than r). A query of a
populated cluster is answered from a few thousand hash look-ups, whatever the
database size; one whose ball is too empty (or still empty at radius 1) falls
back to the scan, so the result is exact either way. Radii whose look-ups would
cost more than the scan they may save (``probe_share``) are not probed: on a
small database the search is the plain scan.

Adds append new distinct codes to FAISS and re-sort the posting lists
(O(N log N): batch your adds); removals drop ids and compact away distinct
codes whose list became empty.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from cxrhash.index.backends.base import BACKENDS, HammingBackend

_WIDE = 4  # codes asked of the scan per item wanted (see DistinctBackend._scan)


@BACKENDS.register("distinct")
class DistinctBackend(HammingBackend):
    """Exact search over distinct codes + CSR posting lists of ids."""

    name = "distinct"
    exact = True
    summary = (
        "learned codes (many duplicates): scans each distinct code once, after probing "
        "the Hamming ball of radius ≤ 2 around the query in a FAISS `IndexBinaryHash`"
    )
    search_params = frozenset({"probe_radius", "probe_share"})

    def __init__(
        self, bits: int, *, probe_radius: int | None = 2, probe_share: float | None = 0.02
    ) -> None:
        super().__init__(bits)
        if probe_radius is not None and not 0 <= int(probe_radius) <= 8:
            raise ValueError(f"probe_radius must be None or in 0..8, got {probe_radius}")
        if probe_share is not None and not probe_share > 0:
            raise ValueError(f"probe_share must be None or positive, got {probe_share}")
        self.probe_radius = None if probe_radius is None else int(probe_radius)
        self.probe_share = None if probe_share is None else float(probe_share)
        self._index = faiss.IndexBinaryFlat(8 * self.code_bytes)
        self._ball = self._new_ball()
        self._dcodes = np.empty((0, self.code_bytes), dtype=np.uint8)  # FAISS order
        self._offsets = np.zeros(1, dtype=np.int64)
        self._sizes = np.zeros(0, dtype=np.int64)  # posting-list lengths, np.diff(_offsets)
        self._item_ids = np.empty(0, dtype=np.int64)
        self._sorted_keys = self._keys(self._dcodes)  # distinct codes as sortable scalars
        self._key_to_dindex = np.empty(0, dtype=np.int64)

    @property
    def params(self) -> dict[str, int | float | None]:
        return {"probe_radius": self.probe_radius, "probe_share": self.probe_share}

    @property
    def n_distinct(self) -> int:
        """Number of distinct codes stored."""
        return len(self._dcodes)

    def _add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        old_d = self._item_dindex()
        uniq, first_row, inverse = np.unique(
            self._keys(codes), return_index=True, return_inverse=True
        )
        pos = np.searchsorted(self._sorted_keys, uniq)
        found = pos < len(self._sorted_keys)
        found[found] = self._sorted_keys[pos[found]] == uniq[found]
        dindex = np.empty(len(uniq), dtype=np.int64)
        dindex[found] = self._key_to_dindex[pos[found]]
        fresh = np.flatnonzero(~found)
        dindex[fresh] = self.n_distinct + np.arange(len(fresh))
        if len(fresh):
            new_codes = codes[first_row[fresh]]
            self._index.add(np.ascontiguousarray(new_codes))
            self._ball.add(np.ascontiguousarray(new_codes))
            self._dcodes = np.concatenate([self._dcodes, new_codes])
            self._rebuild_keys()
        item_d = np.concatenate([old_d, dindex[inverse]])
        all_ids = np.concatenate([self._item_ids, ids])
        order = np.lexsort((all_ids, item_d))
        self._set_postings(item_d[order], all_ids[order])

    def _remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self._item_ids, ids)
        item_d = self._item_dindex()[keep]
        alive = np.bincount(item_d, minlength=self.n_distinct) > 0
        if not alive.all():
            renumber = np.cumsum(alive) - 1
            item_d = renumber[item_d]
            self._dcodes = self._dcodes[alive]
            self._index.reset()
            self._ball = self._new_ball()
            if len(self._dcodes):
                self._index.add(self._dcodes)
                self._ball.add(self._dcodes)
            self._rebuild_keys()
        self._set_postings(item_d, self._item_ids[keep])

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out_ids = np.empty((len(queries), k), dtype=np.int64)
        out_d = np.empty((len(queries), k), dtype=np.int32)
        todo = np.arange(len(queries))  # queries still probing
        scan = [np.empty(0, dtype=np.int64)]  # queries sent to the scan early
        for radius in range(self._probe_limit() + 1):
            if not len(todo):
                break
            self._ball.nflip = radius
            lims, found_d, found_pos = self._ball.range_search(queries[todo], radius + 1)
            covered = np.concatenate([[0], np.cumsum(self._sizes[found_pos])])
            done = covered[lims[1:]] - covered[lims[:-1]] >= k
            for j in np.flatnonzero(done):
                span = slice(lims[j], lims[j + 1])
                out_ids[todo[j]], out_d[todo[j]] = self._expand(found_pos[span], found_d[span], k)
            # A ball still empty at radius ≥ 1 is far from every cluster: a wider shell
            # (2,016 more look-ups at radius 2 of 64 bits) would almost surely be wasted.
            empty = np.diff(lims) == 0 if radius >= 1 else np.zeros(len(todo), dtype=bool)
            scan.append(todo[empty])
            todo = todo[~done & ~empty]
        rest = np.concatenate([*scan, todo])
        if len(rest):
            out_ids[rest], out_d[rest] = self._scan(queries[rest], k)
        return out_ids, out_d

    def _probe_limit(self) -> int:
        """The largest radius worth probing (−1: none).

        At most ``probe_radius``, and a radius only while its hash look-ups (every
        code within r flips of the ≤ 64 key bits) number at most ``probe_share`` × D:
        a look-up costs ~50× a code compared by the scan (150 ns vs 3 ns here,
        ``benchmarks/search.py``), so the default 0.02 probes only where it pays.
        """
        if self.probe_radius is None:
            return -1
        key_bits = min(8 * self.code_bytes, 64)
        limit, lookups = -1, 0
        for radius in range(self.probe_radius + 1):
            lookups += math.comb(key_bits, radius)
            if self.probe_share is not None and lookups > self.probe_share * self.n_distinct:
                break
            limit = radius
        return limit

    def _scan(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by a flat scan of the distinct codes.

        FAISS is asked for ``4k`` codes, not ``k``, so that the group of codes at the
        k-th item's distance is nearly always complete in its answer: on
        structureless codes it is not at ``k`` (10^6 uniform 64-bit codes hold ~90
        codes at the 100th distance), and completing it costs a second scan.
        """
        n_q = len(queries)
        kd = min(_WIDE * k, self.n_distinct)
        d_dist, d_pos = self._index.search(queries, kd)
        sizes = self._sizes
        cum = np.cumsum(sizes[d_pos], axis=1)
        boundary = (cum < k).sum(axis=1)  # first column where the lists cover k items
        d_star = d_dist[np.arange(n_q), boundary]
        cut = (kd < self.n_distinct) & (d_dist[:, -1] == d_star)
        out_ids = np.empty((n_q, k), dtype=np.int64)
        out_d = np.empty((n_q, k), dtype=np.int32)
        for row in np.flatnonzero(~cut):
            within = d_dist[row] <= d_star[row]
            out_ids[row], out_d[row] = self._expand(d_pos[row][within], d_dist[row][within], k)
        cut_rows = np.flatnonzero(cut)
        for radius in np.unique(d_star[cut_rows]):
            chosen = cut_rows[d_star[cut_rows] == radius]
            lims, found_d, found_pos = self._index.range_search(queries[chosen], int(radius) + 1)
            for j, row in enumerate(chosen):
                span = slice(lims[j], lims[j + 1])
                out_ids[row], out_d[row] = self._expand(found_pos[span], found_d[span], k)
        return out_ids, out_d

    def _expand(self, dpos: np.ndarray, ddist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best (distance, id) items among the posting lists of distinct codes ``dpos``."""
        starts = self._offsets[dpos]
        # Each list is ascending, so only its first k ids can reach the top k.
        lens = np.minimum(self._offsets[dpos + 1] - starts, k)
        first = np.cumsum(lens) - lens
        rows = np.repeat(starts - first, lens) + np.arange(lens.sum())
        ids = self._item_ids[rows]
        dists = np.repeat(ddist, lens)
        best = np.lexsort((ids, dists))[:k]
        return ids[best], dists[best]

    def _state(self) -> dict[str, np.ndarray]:
        return {"codes": self._dcodes, "offsets": self._offsets, "ids": self._item_ids}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        codes = self.check_codes(arrays["codes"], "stored distinct codes")
        offsets, ids = arrays["offsets"], arrays["ids"]
        self._set_ids(ids)
        sizes = np.diff(offsets)
        if (
            offsets.ndim != 1
            or len(offsets) != len(codes) + 1
            or offsets[0] != 0
            or offsets[-1] != len(ids)
            or np.any(sizes <= 0)
        ):
            raise ValueError("posting-list offsets do not match the codes and ids")
        item_d = np.repeat(np.arange(len(codes)), sizes)
        if np.any((np.diff(ids) <= 0) & (np.diff(item_d) == 0)):
            raise ValueError("a posting list is not in ascending id order")
        if len(np.unique(self._keys(codes))) != len(codes):
            raise ValueError("stored distinct codes repeat")
        self._dcodes = codes
        self._index.add(codes)
        self._ball.add(codes)
        self._rebuild_keys()
        self._set_postings(item_d, ids)

    def _new_ball(self) -> faiss.IndexBinaryHash:
        """An empty hash table of distinct codes keyed by their first ≤ 64 bits."""
        d = 8 * self.code_bytes
        return faiss.IndexBinaryHash(d, min(d, 64))

    def _item_dindex(self) -> np.ndarray:
        """The distinct-code index of every entry of ``_item_ids``."""
        return np.repeat(np.arange(self.n_distinct), self._sizes)

    def _set_postings(self, item_d: np.ndarray, item_ids: np.ndarray) -> None:
        """Install postings from entries sorted by (distinct index, id)."""
        counts = np.bincount(item_d, minlength=self.n_distinct)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._sizes = counts.astype(np.int64)
        self._item_ids = item_ids

    def _rebuild_keys(self) -> None:
        keys = self._keys(self._dcodes)
        self._key_to_dindex = np.argsort(keys)
        self._sorted_keys = keys[self._key_to_dindex]

    def _keys(self, codes: np.ndarray) -> np.ndarray:
        """One sortable, comparable scalar per code row (a void view of its bytes)."""
        return np.ascontiguousarray(codes).view(np.dtype((np.void, self.code_bytes))).ravel()
