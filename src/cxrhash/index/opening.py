"""Making a new index folder and opening an existing one: the parts a HashIndex is made of.

Of processes racing to create one index exactly one does (:mod:`cxrhash.index.folder`);
the others get :class:`IndexExistsError` or :class:`ConcurrentWriteError`, or, with
``open_or_create``, open the winner's index once its manifest is there. Opening checks the
manifest, the codes' CRC-32s (``verify``), the SQLite rows against the committed count,
the removal flags against the manifest's record, and the search backend.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from cxrhash.index.backends import BACKENDS, check_shard_backend
from cxrhash.index.backends.base import ServerBackend
from cxrhash.index.checked_meta import check_removal_flags
from cxrhash.index.codes import code_bytes
from cxrhash.index.errors import (
    HashIndexError,
    IndexCorruptError,
    IndexExistsError,
    IndexMismatchError,
)
from cxrhash.index.folder import LOCK_NAME, check_empty, write_lock
from cxrhash.index.integrity import DEFAULT_BLOCK_ROWS, MetaSeal
from cxrhash.index.manifest import MANIFEST_NAME, Manifest, read_manifest
from cxrhash.index.meta import META_NAME, MetaStore
from cxrhash.index.pseudonyms import Pseudonymizer, load_pseudonymizer
from cxrhash.index.shards import ShardStore

LOG = logging.getLogger(__name__)


class IndexParts(NamedTuple):
    """What an open index is made of: its folder, committed shards, SQLite metadata, the
    search backend of this session with its parameters, and the pseudonym key (if loaded)."""

    path: Path
    shards: ShardStore
    meta: MetaStore
    backend: str
    params: dict[str, Any]
    pseudonymizer: Pseudonymizer | None


class Settings(NamedTuple):
    """The choices fixed when an index is created (see ``HashIndex.create``)."""

    bits: int
    model_id: str
    backend: str
    backend_params: dict[str, Any] | None
    shard_size: int
    store_floats: bool
    source_names: bool


def create_parts(path: Path, settings: Settings, pseudonymizer: Pseudonymizer | None) -> IndexParts:
    """Make an empty index at ``path`` (a new or empty folder) and return its parts.

    Raises:
        IndexExistsError, ConcurrentWriteError, HashIndexError, ValueError: as
            ``HashIndex.create``.
    """
    code_bytes(settings.bits)  # validates bits
    params = check_shard_backend(settings.backend, settings.bits, settings.backend_params)
    size = settings.shard_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {size!r}")
    if path.exists() and not path.is_dir():
        raise IndexExistsError(
            f"cannot create a hash index at {path}: it is a file, not a folder; "
            "choose a new folder for the index"
        )
    pseudonymizer = pseudonymizer or load_pseudonymizer(forbid_under=path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HashIndexError(
            f"cannot create the index folder {path}: {err.strerror or err}"
        ) from err
    had_lock = (path / LOCK_NAME).exists()
    check_empty(path, had_lock, clean=False)  # before leaving a lock file in a user's folder
    with write_lock(path, "creating or writing"):
        check_empty(path, had_lock, clean=True)
        _reach_server(settings, params)
        meta = MetaStore.create(path / META_NAME)
        manifest = _empty_manifest(settings, params, pseudonymizer.key_id)
        shards = ShardStore.create(path, manifest)  # the manifest is written last
    LOG.info(
        "created %d-bit hash index (%s%s) for model %s at %s",
        settings.bits,
        settings.backend,
        ", float store" if settings.store_floats else "",
        settings.model_id,
        path,
    )
    return IndexParts(path, shards, meta, settings.backend, params, pseudonymizer)


def _reach_server(settings: Settings, params: dict[str, Any]) -> None:
    """For a backend that keeps its codes in a server: connect once (making the first
    shard's store), so a bad address, or a store already holding codes (another index's),
    fails before the index exists. Inside the folder's lock and after its emptiness check,
    because a Milvus Lite file may live in the folder."""
    cls = BACKENDS.get(settings.backend)
    if not issubclass(cls, ServerBackend):
        return
    backend = cls(settings.bits, **cls.shard_params(params, 0))
    try:
        if len(backend):
            raise IndexExistsError(
                f"{backend.location} already holds {len(backend)} codes (another index's?); "
                "a new index needs a store of its own: choose another collection, or drop "
                "that one"
            )
    finally:
        backend.close()


def _empty_manifest(settings: Settings, params: dict[str, Any], key_id: str) -> Manifest:
    """The manifest of a new index holding no rows."""
    return Manifest(
        bits=int(settings.bits),
        model_id=str(settings.model_id),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        key_id=key_id,
        shard_size=settings.shard_size,
        backend=settings.backend,
        backend_params=params,
        floats=bool(settings.store_floats),
        source_names=bool(settings.source_names),
        meta=MetaSeal(0, DEFAULT_BLOCK_ROWS),
        removed=(),
    )


def open_parts(
    path: Path,
    model_id: str | None,
    backend: str | None,
    backend_params: dict[str, Any] | None,
    verify: bool,
    pseudonymizer: Pseudonymizer | None,
) -> IndexParts:
    """The parts of the index at ``path`` as of its last commit (see ``HashIndex.open``)."""
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"no hash index at {path}: {MANIFEST_NAME} not found (create one first)"
        )
    manifest = read_manifest(manifest_path)
    if model_id is not None and model_id != manifest.model_id:
        raise IndexMismatchError(
            f"index at {path} holds codes made by checkpoint {manifest.model_id!r}, "
            f"not by {model_id!r}; re-index with this model or search with that checkpoint"
        )
    shards = ShardStore(path, manifest)
    if verify:
        shards.verify()
    meta = MetaStore.open(path / META_NAME, manifest.count, MANIFEST_NAME)
    name = manifest.backend if backend is None else backend
    base = manifest.backend_params if name == manifest.backend else {}
    try:
        check_removal_flags(path, shards, meta)
        params = check_shard_backend(name, manifest.bits, {**base, **(backend_params or {})})
    except ValueError as err:
        meta.close()
        if isinstance(err, IndexCorruptError | ImportError):  # ImportError: an extra is missing
            raise
        if backend is None and backend_params is None:
            raise IndexCorruptError(f"{manifest_path}: bad search backend: {err}") from err
        raise
    return IndexParts(path, shards, meta, name, params, pseudonymizer)


def settings_mismatches(
    manifest: Manifest,
    bits: int,
    backend: str | None,
    shard_size: int | None,
    store_floats: bool | None,
    source_names: bool | None,
) -> list[str]:
    """How an existing index differs from the settings an ``open_or_create`` asked for
    (``None``: any), one phrase per difference."""
    problems = []
    if manifest.bits != bits:
        problems.append(f"holds {manifest.bits}-bit codes, but {bits} bits were requested")
    if backend is not None and backend != manifest.backend:
        problems.append(
            f"was created with the {manifest.backend!r} backend, not {backend!r} "
            "(the backend is fixed at create; HashIndex.open(backend=...) searches with "
            "another one)"
        )
    if shard_size is not None and shard_size != manifest.shard_size:
        problems.append(f"has shards of {manifest.shard_size} codes, not {shard_size}")
    if store_floats is not None and store_floats != manifest.floats:
        problems.append(
            ("stores no" if store_floats else "stores")
            + " float outputs (the float store is chosen when an index is created: "
            "--store-floats; index into a new directory to change it)"
        )
    if source_names is not None and source_names != manifest.source_names:
        problems.append(
            ("keeps" if manifest.source_names else "pseudonymises")
            + " case ids and source paths (chosen when an index is created: "
            "--keep-source-names; index into a new directory to change it)"
        )
    return problems
