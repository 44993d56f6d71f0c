"""The interface of a Hamming search backend, with the validation and file format they share.

A backend maps caller-chosen non-negative ``int64`` ids to packed codes (see
:func:`cxrhash.index.codes.pack_codes`) and answers top-k queries by ascending
Hamming distance. Ties are broken by ascending id: SPEC §5's "database order",
given that callers assign ids in insertion order. Result rows with fewer than
``k`` hits are padded with id ``PAD_ID`` (−1) and distance ``PAD_DIST`` (−1),
which is why ids must be non-negative.

A saved backend is one ``.npz`` file (no pickles): a JSON header (format
version, backend name, bits, parameters, count) plus the backend's arrays,
written to a temp file and moved into place with ``os.replace``.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from cxrhash.index.codes import check_padding_bits, code_bytes
from cxrhash.registry import Registry

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
PAD_ID = -1
PAD_DIST = -1
_HEADER_KEY = "header"


class BackendError(ValueError):
    """Base class for errors about a backend's arguments or files."""


class DuplicateIdError(BackendError):
    """An id occurs twice in one call or is already in the backend."""


class UnknownIdError(BackendError):
    """An id to remove is not in the backend."""


class IndexFileError(BackendError):
    """A saved backend file is truncated, corrupt or of another kind."""


class HammingBackend(ABC):
    """Top-k Hamming search over packed codes keyed by int64 ids.

    Subclasses implement the ``_add``, ``_remove``, ``_search``, ``_state`` and
    ``_restore`` hooks; the public methods here validate the arguments first,
    so the hooks see clean data: ids unique, new (or present, for removal) and
    sorted ascending, codes C-contiguous ``uint8`` of the right width.
    """

    name: ClassVar[str]
    #: Results equal the numpy reference, ties in id order (else approximate: recall reported).
    exact: ClassVar[bool]
    #: Can back one shard of a :class:`~cxrhash.index.store.HashIndex` (``cxrhash index
    #: --backend``): built from the shard's codes in this process, saved beside it, or
    #: (a :class:`ServerBackend`) a copy of them in a server, checked against the shard.
    serves_shard: ClassVar[bool] = True
    #: Keeps its codes in a server (or a server's file), not in this process.
    needs_server: ClassVar[bool] = False
    #: What it is and what it is for, in one line (help text and docs; Markdown).
    summary: ClassVar[str]
    #: Parameters that only affect search, so ``load`` may change them.
    search_params: ClassVar[frozenset[str]] = frozenset()
    #: Constructor keywords that are not a user's choice (left out of help and indexes).
    internal_params: ClassVar[frozenset[str]] = frozenset()
    #: Parameters an index on this backend must be given (a server's address).
    required_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, bits: int) -> None:
        self.bits = int(bits)
        self.code_bytes = code_bytes(self.bits)
        self._ids = np.empty(0, dtype=np.int64)  # every stored id, ascending

    @classmethod
    def check_params(cls, bits: int, params: dict[str, Any]) -> dict[str, Any]:
        """The full parameters (defaults filled in) of a backend of ``bits``-bit codes made
        with ``params``, checked; this default builds an empty one to ask it.

        Raises:
            TypeError: an unknown parameter.
            ValueError: a bad value.
        """
        return dict(cls(bits, **params).params)

    # ------------------------------------------------------------------ public API

    @property
    def params(self) -> dict[str, Any]:
        """The constructor's keyword parameters (saved with the backend)."""
        return {}

    @property
    def ids(self) -> np.ndarray:
        """All stored ids, ascending (read-only)."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        sep = ", " if params else ""
        return f"{type(self).__name__}(bits={self.bits}{sep}{params}, n={len(self)})"

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``ids`` are stored."""
        ids = as_ids(ids, "ids")
        pos = np.searchsorted(self._ids, ids)
        inside = pos < len(self._ids)
        hit = np.zeros(len(ids), dtype=bool)
        hit[inside] = self._ids[pos[inside]] == ids[inside]
        return hit

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Store ``codes[i]`` under ``ids[i]``.

        Args:
            ids: n distinct non-negative int64 ids, none already stored.
            codes: n×B packed ``uint8`` codes.

        Raises:
            ValueError: wrong shapes, dtypes, code width or negative ids.
            DuplicateIdError: an id repeats in ``ids`` or is already stored.
        """
        ids = as_ids(ids, "ids")
        codes = self.check_codes(codes, "codes")
        if len(ids) != len(codes):
            raise ValueError(f"ids has {len(ids)} entries but codes has {len(codes)} rows")
        _reject_repeats(ids)
        present = ids[self.contains(ids)]
        if len(present):
            raise DuplicateIdError(
                f"{len(present)} id(s) are already in the {self.name} backend: {few(present)}"
            )
        if len(ids) == 0:
            return
        order = np.argsort(ids, kind="stable")
        ids, codes = ids[order], np.ascontiguousarray(codes[order])
        self._add(ids, codes)
        if len(self._ids) == 0 or ids[0] > self._ids[-1]:
            self._ids = np.concatenate([self._ids, ids])
        else:
            self._ids = np.sort(np.concatenate([self._ids, ids]))

    def remove(self, ids: np.ndarray) -> int:
        """Remove the items with these ids; returns how many were removed.

        Raises:
            UnknownIdError: an id is not stored (nothing is removed).
            DuplicateIdError: an id repeats in ``ids``.
        """
        ids = as_ids(ids, "ids")
        _reject_repeats(ids)
        unknown = ids[~self.contains(ids)]
        if len(unknown):
            raise UnknownIdError(
                f"cannot remove {len(unknown)} id(s) that are not in the {self.name} "
                f"backend: {few(unknown)}"
            )
        if len(ids) == 0:
            return 0
        ids = np.sort(ids)
        self._remove(ids)
        self._ids = np.delete(self._ids, np.searchsorted(self._ids, ids))
        return len(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items per query, by (distance, id).

        Args:
            queries: Q×B packed ``uint8`` codes (or one code as a 1-D array).
            k: results per query, ≥ 1.

        Returns:
            ``(ids, distances)``: Q×k ``int64`` ids and ``int32`` distances,
            best first; padded with −1 / −1 where fewer than ``k`` are found.
        """
        k = check_k(k)
        q = self.check_codes(queries, "queries")
        keep = min(k, len(self))
        if keep == k and len(q):
            return self._search(q, k)
        ids = np.full((len(q), k), PAD_ID, dtype=np.int64)
        dists = np.full((len(q), k), PAD_DIST, dtype=np.int32)
        if keep and len(q):
            ids[:, :keep], dists[:, :keep] = self._search(q, keep)
        return ids, dists

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the backend to one ``.npz`` file atomically (temp file + ``os.replace``)."""
        path = Path(path)
        header = {
            "format_version": FORMAT_VERSION,
            "backend": self.name,
            "bits": self.bits,
            "params": self.params,
            "count": len(self),
        }
        arrays = self._state()
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                encoded = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
                payload: dict[str, Any] = {_HEADER_KEY: encoded, **arrays}
                np.savez(fh, **payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        LOG.info("saved %s backend with %d codes to %s", self.name, len(self), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **params: Any) -> Self:
        """Read a backend written by :meth:`save`.

        Args:
            path: the file.
            **params: overrides of the saved search parameters
                (``search_params``); other parameters must equal the saved ones.

        Raises:
            FileNotFoundError: no file at ``path``.
            IndexFileError: the file is truncated, corrupt or holds another backend.
        """
        path = Path(path)
        header, arrays = read_backend_file(path)
        if header["backend"] != cls.name:
            raise IndexFileError(
                f"{path} holds a {header['backend']!r} backend, not {cls.name!r} "
                "(load_backend picks the class from the file)"
            )
        saved = header["params"]
        fixed = sorted(
            key
            for key, value in params.items()
            if key in saved and key not in cls.search_params and value != saved[key]
        )
        if fixed:
            raise ValueError(
                f"{path} was built with {', '.join(f'{k}={saved[k]!r}' for k in fixed)}; "
                f"only the search parameters {sorted(cls.search_params)} can change on load"
            )
        backend = cls(int(header["bits"]), **{**saved, **params})
        try:
            backend._restore(arrays)
        except (ValueError, KeyError, IndexError, RuntimeError) as err:
            raise IndexFileError(f"{path}: inconsistent {cls.name} backend data: {err}") from err
        if len(backend) != header["count"]:
            raise IndexFileError(
                f"{path}: header records {header['count']} codes but the data holds {len(backend)}"
            )
        return backend

    def check_codes(self, codes: np.ndarray, name: str) -> np.ndarray:
        """Return ``codes`` as a C-contiguous n×B ``uint8`` array or raise ValueError."""
        arr = np.asarray(codes)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"{name} must be n×{self.code_bytes} uint8, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise ValueError(
                f"{name} must be uint8 packed codes (see pack_codes), got dtype {arr.dtype}"
            )
        if arr.shape[1] != self.code_bytes:
            raise ValueError(
                f"{name} rows have {arr.shape[1]} bytes; {self.bits}-bit codes pack into "
                f"{self.code_bytes} bytes"
            )
        check_padding_bits(arr, self.bits, name)
        return np.ascontiguousarray(arr)

    # ------------------------------------------------------------------ hooks

    @abstractmethod
    def _add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Store new items (ids new, unique, ascending); ``self._ids`` still holds the old set."""

    @abstractmethod
    def _remove(self, ids: np.ndarray) -> None:
        """Drop stored items; ``ids`` are present, unique and ascending."""

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Q×k ids and distances for ``1 <= k <= len(self)``; −1 where nothing was found."""

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """The arrays that :meth:`_restore` needs to rebuild this backend."""

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Fill a fresh backend from :meth:`_state`'s arrays; ValueError if inconsistent."""

    def _set_ids(self, ids: np.ndarray) -> np.ndarray:
        """Install the stored id set from a file (any order); returns it sorted."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype != np.int64:
            raise ValueError(f"stored ids must be 1-D int64, got {ids.dtype} {ids.shape}")
        ordered = np.sort(ids)
        if len(ordered) and (ordered[0] < 0 or np.any(np.diff(ordered) == 0)):
            raise ValueError("stored ids are negative or repeat")
        self._ids = ordered
        return ordered


class ServerBackend(HammingBackend):
    """A backend that keeps its codes in a server, where they outlive this process.

    Creating one adopts the codes its store already holds, so an index that mirrors its
    shards there (:mod:`cxrhash.index.shard_search`) checks that copy against the shards
    with :meth:`stored_codes` and sends only what is missing.
    """

    needs_server = True

    @classmethod
    @abstractmethod
    def shard_params(cls, params: dict[str, Any], shard: int) -> dict[str, Any]:
        """The parameters of the store of shard number ``shard`` of an index whose
        backend has ``params`` (each shard needs a store of its own)."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the codes are, for messages (e.g. a collection and its server)."""

    @abstractmethod
    def stored_codes(self, ids: np.ndarray) -> np.ndarray:
        """The packed codes the server holds under ``ids`` (stored ids), in that order."""

    @abstractmethod
    def persist(self) -> None:
        """Make every write so far durable in the server."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection (the codes stay in the server)."""


BACKENDS: Registry[type[HammingBackend]] = Registry("Hamming backend")


def read_backend_file(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and arrays of a saved backend; IndexFileError (naming the file) if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(npz[_HEADER_KEY].tobytes().decode("utf-8"))
            arrays = {key: npz[key] for key in npz.files if key != _HEADER_KEY}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise IndexFileError(
            f"{path} is not a readable backend file (truncated or corrupt?): {err}"
        ) from err
    required = ("format_version", "backend", "bits", "params", "count")
    if not isinstance(header, dict) or any(key not in header for key in required):
        raise IndexFileError(f"{path}: header lacks some of the fields {', '.join(required)}")
    if header["format_version"] != FORMAT_VERSION:
        raise IndexFileError(
            f"{path} has format version {header['format_version']}, "
            f"this cxrhash reads version {FORMAT_VERSION}"
        )
    return header, arrays


def as_ids(ids: np.ndarray, name: str) -> np.ndarray:
    """Return ``ids`` as a 1-D non-negative ``int64`` array or raise ValueError."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of int64 ids, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) and np.can_cast(arr.dtype, np.int64)
    ):
        if not (arr.size == 0 and arr.dtype == np.float64):  # np.asarray([]) is float64
            raise ValueError(f"{name} must be int64 ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if len(arr) and arr.min() < 0:
        raise ValueError(
            f"{name} must be non-negative (−1 pads search results), got {int(arr.min())}"
        )
    return arr


def check_k(k: int) -> int:
    """Return ``k`` as an int ≥ 1 or raise ValueError."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def few(values: np.ndarray, limit: int = 5) -> str:
    """The first ``limit`` values for an error message, with a count of the rest."""
    shown = ", ".join(str(v) for v in np.asarray(values)[:limit].tolist())
    extra = len(values) - limit
    return shown + (f", … ({extra} more)" if extra > 0 else "")


def _reject_repeats(ids: np.ndarray) -> None:
    values, counts = np.unique(ids, return_counts=True)
    repeated = values[counts > 1]
    if len(repeated):
        raise DuplicateIdError(
            f"{len(repeated)} id(s) occur more than once in ids: {few(repeated)}"
        )
