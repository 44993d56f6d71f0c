"""Exact Hamming search in a Milvus collection (Milvus Lite file or a Milvus server).

The codes live in a collection with an ``id`` INT64 primary key and a
``code`` BINARY_VECTOR field (``8 × code_bytes`` bits) under a ``BIN_FLAT``
index with the ``HAMMING`` metric, so Milvus computes exact distances. ``uri``
picks the deployment: a local path ending in ``.db`` runs Milvus Lite inside
the process (started by pymilvus), ``http://host:19530`` talks to a Milvus
standalone or cluster. The ``MILVUS_TOKEN`` environment variable, when set,
is passed as the token (it is never written to the pointer file).

Milvus orders ties arbitrarily, so results are made equal to the numpy
reference by a boundary check per query: ask for ``k + slack`` hits, sort
them by (distance, id), and accept the row when the last hit is farther
than the k-th (the group at the k-th distance d_k is then whole). Otherwise
the hits closer than d_k are all there, and a range search (``range_filter``
d_k ≤ distance < ``radius`` d_k + 1) fetches the group at d_k itself, whose
lowest ids fill the row. A group that fills even ``max_limit`` (Milvus's topk
cap, 16,384) hits is collected by a walk over the stored ids in ascending
chunks of ``max_limit``: a search filtered to one id range returns every
group member in it, so the walk stops once k hits are known. ``k`` above
``max_limit`` walks every chunk. Cost: one extra range search per cut query
(grouped by d_k), and for huge tie groups (clusters of identical codes) about
one chunk search per query.

Writes are visible at once because every request uses ``Strong``
consistency; ``flush`` (rate-limited to 0.1/s per collection on servers) is
called only by :meth:`MilvusBackend.save`. Milvus does not reject a repeated
primary key on insert, so ``add`` first queries the new ids (another writer
may have added them). The id-range walk assumes this backend is the
collection's only writer.

``save`` writes the usual backend file with no arrays: its JSON header
(bits, count, ``uri``, ``collection``) points at the collection, which Milvus
persists itself. ``load`` reconnects, reads the ids back and checks bits and
count.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterator
from typing import Any, Self

import numpy as np

from cxrhash.index.backends.base import (
    BACKENDS,
    BackendError,
    DuplicateIdError,
    IndexFileError,
    ServerBackend,
    as_ids,
    few,
)
from cxrhash.index.backends.milvus_client import (
    DEFAULT_TIMEOUT,
    MAX_TOPK,
    check_installed,
    check_values,
    connect,
    normalise_uri,
)

INSERT_BATCH = 10_000
ID_BATCH = 4_096  # ids per ``id in [...]`` query or delete
RESULT_BUDGET = 1 << 20  # hits per search request, well under the 64 MB message cap
_BITS_TAG = re.compile(r"\bbits=(\d+)\b")


class CollectionMismatchError(BackendError):
    """The Milvus collection is missing or does not hold this backend's codes."""


@BACKENDS.register("milvus")
class MilvusBackend(ServerBackend):
    """Exact search in Milvus (BIN_FLAT, HAMMING) with ties in id order.

    Opening a collection that exists adopts its items (their ids are read
    back); otherwise the collection is created.

    Args:
        bits: code length.
        uri: ``*.db`` path (Milvus Lite) or server address ``http://host:19530``.
        collection: collection name (letters, digits, underscores).
        slack: extra hits asked for beyond k, so most boundaries are seen whole.
        max_limit: largest ``limit`` per search (Milvus's topk cap); also the
            id-chunk size of the boundary walk.
        timeout: seconds to wait for the server to answer when connecting.
        create: create the collection when missing (``load`` passes False).
    """

    name = "milvus"
    exact = True
    summary = (
        "a Milvus collection (`BIN_FLAT`, `HAMMING`) on a server or in a Milvus Lite file, "
        "mirroring the index's codes; needs the `milvus` extra and a `uri` (`docs/milvus.md`)"
    )
    # Also ``uri``: the same server may be reached under another address, or a Lite file moved.
    search_params = frozenset({"slack", "max_limit", "uri", "timeout"})
    internal_params = frozenset({"create"})
    required_params = ("uri",)

    def __init__(
        self,
        bits: int,
        *,
        uri: str = "cxrhash_milvus.db",
        collection: str = "cxrhash",
        slack: int = 16,
        max_limit: int = MAX_TOPK,
        timeout: float = DEFAULT_TIMEOUT,
        create: bool = True,
    ) -> None:
        super().__init__(bits)
        check_values(collection, slack, max_limit, timeout)
        self.uri = normalise_uri(uri)
        self.collection = collection
        self.slack, self.max_limit, self.timeout = int(slack), int(max_limit), float(timeout)
        self._client = connect(self.uri, self.timeout)
        try:
            if self._client.has_collection(collection):
                self._attach()
            elif create:
                self._create()
            else:
                raise CollectionMismatchError(f"no collection {collection!r} at {self.uri}")
        except BaseException:
            self._client.close()
            raise

    @property
    def params(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "collection": self.collection,
            "slack": self.slack,
            "max_limit": self.max_limit,
            "timeout": self.timeout,
        }

    @classmethod
    def check_params(cls, bits: int, params: dict[str, Any]) -> dict[str, Any]:
        """The full parameters for ``params``, checked without connecting to Milvus.

        Raises:
            TypeError: an unknown parameter (or ``create``, which is not a choice).
            ValueError: no ``uri``, or a bad value.
            MilvusNotInstalledError: the ``milvus`` extra is missing.
        """
        internal = sorted(cls.internal_params & set(params))
        if internal:
            raise TypeError(f"{', '.join(internal)} is not a parameter of a milvus index")
        bound = inspect.signature(cls.__init__).bind(None, bits, **params)  # TypeError if unknown
        bound.apply_defaults()
        if "uri" not in params:
            raise ValueError(
                "the milvus backend needs a uri: a Milvus Lite file (uri=PATH.db) or a "
                "server address (uri=http://host:19530)"
            )
        full = bound.arguments
        check_values(full["collection"], full["slack"], full["max_limit"], full["timeout"])
        check_installed()
        return {
            "uri": normalise_uri(full["uri"]),
            "collection": full["collection"],
            "slack": int(full["slack"]),
            "max_limit": int(full["max_limit"]),
            "timeout": float(full["timeout"]),
        }

    @classmethod
    def shard_params(cls, params: dict[str, Any], shard: int) -> dict[str, Any]:
        """Shard 0 uses the collection named by ``params``; shard n > 0 ``<name>_s000n``."""
        if shard == 0:
            return dict(params)
        return {**params, "collection": f"{params['collection']}_s{shard:04d}"}

    @property
    def location(self) -> str:
        """The collection and its uri."""
        return f"Milvus collection {self.collection!r} at {self.uri}"

    def stored_codes(self, ids: np.ndarray) -> np.ndarray:
        """The codes the collection holds under ``ids`` (which must be stored), in order.

        Raises:
            BackendError: an id is missing from the collection or held twice.
        """
        ids = as_ids(ids, "ids")
        found: dict[int, bytes] = {}
        for start in range(0, len(ids), ID_BATCH):
            chunk = ids[start : start + ID_BATCH].tolist()
            for row in self._client.query(
                self.collection,
                filter=f"id in {chunk}",
                output_fields=["id", "code"],
                consistency_level="Strong",
            ):
                code = row["code"]
                found[row["id"]] = code[0] if isinstance(code, list) else code
        missing = [i for i in ids.tolist() if i not in found]
        if missing:
            raise BackendError(
                f"{len(missing)} id(s) are not in the Milvus collection {self.collection!r}: "
                f"{few(np.asarray(missing))}"
            )
        out = np.frombuffer(b"".join(found[i] for i in ids.tolist()), dtype=np.uint8)
        return out.reshape(len(ids), self.code_bytes)

    def persist(self) -> None:
        """Flush the collection (Milvus servers allow this about once per 10 s)."""
        self._client.flush(self.collection)

    def close(self) -> None:
        """Close the connection (the data stays in Milvus)."""
        self._client.close()

    def drop(self) -> None:
        """Delete the collection and its items from Milvus (then only ``close`` is left)."""
        self._client.drop_collection(self.collection)
        self._ids = np.empty(0, dtype=np.int64)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Flush the collection, then write the pointer file (see the module docstring)."""
        self.persist()
        super().save(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **params: Any) -> Self:
        """Reconnect to the collection a :meth:`save` file names.

        Raises:
            IndexFileError: the file is unreadable, or the collection is gone,
                has other bits, or holds another number of codes.
        """
        try:
            return super().load(path, **{"create": False, **params})
        except CollectionMismatchError as err:
            raise IndexFileError(f"{path}: {err}") from err

    # ------------------------------------------------------------------ collection

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(
            auto_id=False, description=f"cxrhash Hamming codes, bits={self.bits}"
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=8 * self.code_bytes)
        index = self._client.prepare_index_params()
        index.add_index(field_name="code", index_type="BIN_FLAT", metric_type="HAMMING")
        self._client.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level="Strong"
        )

    def _attach(self) -> None:
        info = self._client.describe_collection(self.collection)
        fields = {f["name"]: f for f in info["fields"]}
        tag = _BITS_TAG.search(info.get("description", ""))
        dim = fields.get("code", {}).get("params", {}).get("dim")
        if (
            tag is None
            or int(tag.group(1)) != self.bits
            or int(dim or 0) != 8 * self.code_bytes
            or not fields.get("id", {}).get("is_primary")
        ):
            found = f"bits={tag.group(1)}" if tag else "no cxrhash bits tag"
            raise CollectionMismatchError(
                f"collection {self.collection!r} at {self.uri} does not hold {self.bits}-bit "
                f"cxrhash codes ({found}, code dim {dim})"
            )
        self._client.load_collection(self.collection)
        ids = np.fromiter(self._stored_ids(), dtype=np.int64)
        try:
            self._set_ids(ids)
        except ValueError as err:
            raise CollectionMismatchError(f"collection {self.collection!r}: {err}") from err

    def _stored_ids(self) -> Iterator[int]:
        it = self._client.query_iterator(
            self.collection, batch_size=MAX_TOPK, filter="id >= 0", output_fields=["id"]
        )
        try:
            while batch := it.next():
                yield from (row["id"] for row in batch)
        finally:
            it.close()

    # ------------------------------------------------------------------ hooks

    def _add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        present: list[int] = []
        for start in range(0, len(ids), ID_BATCH):
            chunk = ids[start : start + ID_BATCH].tolist()
            found = self._client.query(
                self.collection,
                filter=f"id in {chunk}",
                output_fields=["id"],
                consistency_level="Strong",
            )
            present += [row["id"] for row in found]
        if present:
            raise DuplicateIdError(
                f"{len(present)} id(s) are already in the Milvus collection "
                f"{self.collection!r}: {few(np.sort(present))}"
            )
        for start in range(0, len(ids), INSERT_BATCH):
            part = slice(start, start + INSERT_BATCH)
            rows = [
                {"id": i, "code": code.tobytes()}
                for i, code in zip(ids[part].tolist(), codes[part], strict=True)
            ]
            self._client.insert(self.collection, rows)

    def _remove(self, ids: np.ndarray) -> None:
        for start in range(0, len(ids), ID_BATCH):
            self._client.delete(self.collection, ids=ids[start : start + ID_BATCH].tolist())

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out_ids = np.empty((len(queries), k), dtype=np.int64)
        out_d = np.empty((len(queries), k), dtype=np.int32)
        if k > self.max_limit:
            for row, (ids, d) in enumerate(self._walk(queries, k, None)):
                out_ids[row], out_d[row] = ids, d
            return out_ids, out_d
        n = len(self)
        cut: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # row -> hits closer than d_k
        kth: dict[int, int] = {}
        for row, (ids, d) in enumerate(self._top(queries, min(k + self.slack, n, self.max_limit))):
            if len(ids) == n or (len(ids) > k and d[-1] > d[k - 1]):
                out_ids[row], out_d[row] = ids[:k], d[:k]
            else:
                kth[row] = int(d[k - 1])
                cut[row] = ids[d < kth[row]], d[d < kth[row]]
        # Complete each cut group: a range search returns the whole group at d_k
        # unless it fills max_limit, in which case the id walk collects it.
        for dk in sorted(set(kth.values())):
            rows = [row for row, value in kth.items() if value == dk]
            walk = []
            group = self._request(queries[rows], self.max_limit, dk)
            for row, (ids, d) in zip(rows, group, strict=True):
                if len(ids) < self.max_limit:
                    out_ids[row], out_d[row] = _top_k(cut[row], (ids, d), k)
                else:
                    walk.append(row)
            if walk:
                found = self._walk(queries[walk], k, dk, [cut[row] for row in walk])
                for row, (ids, d) in zip(walk, found, strict=True):
                    out_ids[row], out_d[row] = ids, d
        return out_ids, out_d

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            raise ValueError(f"a milvus pointer file holds no arrays, found {sorted(arrays)}")

    # ------------------------------------------------------------------ search helpers

    def _request(
        self, queries: np.ndarray, limit: int, band: int | None = None, flt: str = ""
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Milvus's hits per query (ids, int distances), in request batches.

        ``band``: a range search for hits at exactly that distance.
        """
        params: dict[str, Any] = {"metric_type": "HAMMING"}
        if band is not None:
            params["params"] = {"radius": band + 1, "range_filter": band}
        per_request = max(1, min(MAX_TOPK, RESULT_BUDGET // limit))
        out = []
        for start in range(0, len(queries), per_request):
            result = self._client.search(
                self.collection,
                data=[q.tobytes() for q in queries[start : start + per_request]],
                anns_field="code",
                limit=limit,
                filter=flt,
                search_params=params,
                consistency_level="Strong",
            )
            for hits in result:
                d = np.rint(np.asarray(hits.distances, dtype=np.float64)).astype(np.int32)
                out.append((np.asarray(hits.ids, dtype=np.int64), d))
        return out

    def _top(self, queries: np.ndarray, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Milvus's top ``limit`` per query, re-sorted by (distance, id)."""
        out = []
        for ids, d in self._request(queries, limit):
            if len(ids) < limit:
                raise BackendError(
                    f"Milvus returned {len(ids)} hits, expected {limit}: has another "
                    f"process changed collection {self.collection!r}?"
                )
            order = np.lexsort((ids, d))
            out.append((ids[order], d[order]))
        return out

    def _walk(
        self,
        queries: np.ndarray,
        k: int,
        band: int | None,
        start: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The top k per query from a scan of the ids in ascending chunks.

        A chunk holds at most ``max_limit`` ids, so a search filtered to its id
        range and limited to its size returns all of it (with ``band``: all of
        it at that distance). With ``band`` the hits join ``start`` (every hit
        closer than ``band``) and a query is done once it has k; without, all
        chunks are read.
        """
        empty = (np.empty(0, np.int64), np.empty(0, np.int32))
        best = list(start) if start is not None else [empty] * len(queries)
        active = list(range(len(queries)))
        for pos in range(0, len(self._ids), self.max_limit):
            chunk = self._ids[pos : pos + self.max_limit]
            flt = f"id >= {chunk[0]} and id <= {chunk[-1]}"
            hits = self._request(queries[active], len(chunk), band, flt)
            for j, found in zip(active, hits, strict=True):
                best[j] = _top_k(best[j], found, k, partial=True)
            if band is not None:
                active = [j for j in active if len(best[j][0]) < k]
                if not active:
                    break
        return [_top_k(hits, empty, k) for hits in best]


def _top_k(
    first: tuple[np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray],
    k: int,
    partial: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of two hit lists by (distance, id); BackendError if fewer unless ``partial``."""
    ids = np.concatenate([first[0], second[0]])
    d = np.concatenate([first[1], second[1]])
    if len(ids) < k and not partial:
        raise BackendError(
            f"found {len(ids)} of {k} hits: has another process changed the collection?"
        )
    order = np.lexsort((ids, d))[:k]
    return ids[order], d[order]
