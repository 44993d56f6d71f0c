"""Search over the shards of an index: one backend per shard, merged into one exact top-k.

Each shard's backend (``DEFAULT_BACKEND`` unless another that ``serves_shard`` is
chosen) is built from its shard's memory map at the first search after ``open`` or
``add`` (so bulk indexing never pays for it), or loaded from a file
:meth:`ShardSearch.save` wrote beside the shard while that shard is unchanged. Removed
rows are left out when a backend is built and dropped from the built ones. A backend that
keeps its codes in a server (``milvus``) is instead the server's copy of the shard, checked
and brought up to date when opened (:mod:`cxrhash.index.server_mirror`). The per-shard
top-k are merged exactly by (distance, id) (:func:`merge_top_k`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrhash.index.backends import BACKENDS, HammingBackend, create_backend, load_backend
from cxrhash.index.backends.base import ServerBackend
from cxrhash.index.durable import write_json_atomic
from cxrhash.index.errors import HashIndexError
from cxrhash.index.manifest import ShardEntry
from cxrhash.index.server_mirror import bring_up_to_date, compare
from cxrhash.index.shards import ShardStore

LOG = logging.getLogger(__name__)


class ShardSearch:
    """The search backends of an open index's shards, kept up to date with its commits.

    Args:
        path: the index directory.
        shards: its committed codes and removal record.
        name: the backend of this session.
        params: its parameters (complete: see ``check_shard_backend``).
    """

    def __init__(self, path: Path, shards: ShardStore, name: str, params: dict[str, Any]) -> None:
        self.path = path
        self.name = name
        self.params = params
        self._shards = shards
        self._backends: list[HammingBackend] = []  # one per shard, built by _synced
        self._done: list[int] = []  # rows of each shard already in its backend
        cls = BACKENDS.get(name)
        self._server = cls if issubclass(cls, ServerBackend) else None

    def search(self, queries: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
        """Q×``keep`` ``(rows, distances)`` of checked packed ``queries`` over every shard,
        merged by (distance, id); ``keep`` ≥ 1 and at most the items not removed."""
        parts = [b.search(queries, min(keep, len(b))) for b in self._synced() if len(b)]
        if len(parts) == 1:
            return parts[0]
        return merge_top_k(parts, keep)

    def drop(self, rows: np.ndarray) -> None:
        """Remove newly removed ``rows`` from the backends already holding them."""
        size = self._shards.manifest.shard_size
        for s, backend in enumerate(self._backends):
            mine = rows[(rows >= s * size) & (rows < s * size + self._done[s])]
            if len(mine):
                backend.remove(mine)

    def sync(self) -> None:
        """Bring every shard's backend up to date now, and for a backend that keeps its
        codes in a server, make them durable there (``cxrhash index`` ends with this)."""
        for backend in self._synced():
            if isinstance(backend, ServerBackend):
                backend.persist()

    def mirror_report(self) -> tuple[list[str], list[str]]:
        """For a backend that keeps its codes in a server: ``(problems, notes)`` of its copy
        of each shard against the shard, read without writing; nothing for the others.

        Raises:
            MilvusUnavailableError (a ``ValueError``): the server does not answer.
        """
        problems: list[str] = []
        notes: list[str] = []
        if self._server is None:
            return problems, notes
        size = self._shards.manifest.shard_size
        for s, entry in enumerate(self._shards.manifest.shards):
            backend = self._open_server(s)
            try:
                lo = s * size
                diff = compare(
                    backend,
                    lo,
                    self._shards.shard_codes(s),
                    self._removed_in(lo, lo + entry.rows),
                )
            finally:
                backend.close()
            problems += diff.problems(backend.location)
            notes += diff.notes(backend.location) or [
                f"{backend.location} holds the same {len(backend)} codes"
            ]
        return problems, notes

    def save(self) -> list[Path]:
        """Save each shard's backend beside it (``shards/NNNN.<backend>.npz`` and a ``.json``
        sidecar with the shard's committed rows and CRC-32) and return the ``.npz`` paths.
        A backend that keeps its codes in a server is made durable there instead (no file)."""
        if self._server is not None:
            self.sync()
            return []
        written = []
        for s, backend in enumerate(self._synced()):
            target = self._saved_path(s)
            backend.save(target)  # then the sidecar: a crash between leaves them unmatched
            write_json_atomic(target.with_suffix(".json"), self._saved_info(s))
            written.append(target)
        return written

    def close(self) -> None:
        """Drop the backends built so far (the next search builds them again), closing
        their connections to a server."""
        backends, self._backends, self._done = self._backends, [], []
        for backend in backends:
            if isinstance(backend, ServerBackend):
                backend.close()

    def _synced(self) -> list[HammingBackend]:
        """Every shard's backend, after adding the rows committed since it was last brought up
        to date (removed rows left out)."""
        size = self._shards.manifest.shard_size
        for s, entry in enumerate(self._shards.manifest.shards):
            if s == len(self._backends):
                self._add_backend(s, entry)
            done = self._done[s]
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
                    f"cannot build the {self.name} backend of {self.path / entry.file}: {err}"
                ) from err
            self._done[s] = entry.rows
        return self._backends

    def _add_backend(self, s: int, entry: ShardEntry) -> None:
        """Shard ``s``'s backend: the saved one if it fits, else an empty one to fill; for a
        backend that keeps its codes in a server, its store, checked and brought up to date."""
        if self._server is not None:
            backend = self._open_server(s)
            lo = s * self._shards.manifest.shard_size
            try:
                bring_up_to_date(
                    backend,
                    lo,
                    self._shards.shard_codes(s),
                    self._removed_in(lo, lo + entry.rows),
                    f"{backend.location} (the search backend of {self.path / entry.file})",
                )
            except BaseException:
                backend.close()
                raise
            self._backends.append(backend)
            self._done.append(entry.rows)
            return
        saved = self._load_saved(s, entry)
        if saved is None:
            self._backends.append(
                create_backend(self.name, self._shards.manifest.bits, **self.params)
            )
            self._done.append(0)
        else:
            self._backends.append(saved)
            self._done.append(entry.rows)

    def _open_server(self, s: int) -> ServerBackend:
        """Shard ``s``'s store in the server (created if missing), holding what it holds."""
        assert self._server is not None
        params = self._server.shard_params(self.params, s)
        return self._server(self._shards.manifest.bits, **params)

    def _removed_in(self, lo: int, hi: int) -> np.ndarray:
        """The removed rows in ``[lo, hi)``, ascending."""
        removed = self._shards.removed
        at = np.searchsorted(removed, [lo, hi])
        return removed[at[0] : at[1]]

    def _saved_path(self, s: int) -> Path:
        return (self.path / self._shards.manifest.shards[s].file).with_suffix(f".{self.name}.npz")

    def _saved_info(self, s: int) -> dict[str, Any]:
        entry = self._shards.manifest.shards[s]
        return {"backend": self.name, "rows": entry.rows, "crc32": entry.crc32}

    def _load_saved(self, s: int, entry: ShardEntry) -> HammingBackend | None:
        """Shard ``s``'s saved backend if saved from exactly its committed rows, else None."""
        target = self._saved_path(s)
        try:
            info = json.loads(target.with_suffix(".json").read_text(encoding="utf-8"))
            if info != self._saved_info(s):
                return None
            backend = load_backend(target, **self.params)
        except (OSError, ValueError) as err:  # missing, stale, corrupt or other parameters
            LOG.info("not using the saved backend %s: %s", target, err)
            return None
        lo = s * self._shards.manifest.shard_size
        rows = np.arange(lo, lo + entry.rows, dtype=np.int64)
        dead = self._removed_in(lo, lo + entry.rows)
        stored = backend.ids
        if (
            backend.name != self.name
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
