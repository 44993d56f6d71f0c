"""Hamming search backends behind one interface, registered by name in ``BACKENDS``.

Every backend ranks by (distance, id) and says of itself whether it is exact, whether it
can serve a shard of an index, whether it needs a server, and what it is for
(:mod:`cxrhash.index.backends.catalog` lists them: ``backend_table()``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cxrhash.index.backends.base import (
    BACKENDS,
    PAD_DIST,
    PAD_ID,
    BackendError,
    DuplicateIdError,
    HammingBackend,
    IndexFileError,
    UnknownIdError,
    read_backend_file,
)
from cxrhash.index.backends.catalog import (
    DEFAULT_BACKEND,
    backend_help,
    backend_names,
    backend_params_help,
    backend_table,
    check_shard_backend,
)
from cxrhash.index.backends.distinct import DistinctBackend
from cxrhash.index.backends.flat import FlatBackend
from cxrhash.index.backends.hnsw import HNSWBackend
from cxrhash.index.backends.ivf import IVFBackend
from cxrhash.index.backends.milvus import MilvusBackend
from cxrhash.index.backends.multihash import MultiHashBackend
from cxrhash.index.backends.numpy_ref import NumpyBackend
from cxrhash.index.backends.recall import id_recall, tie_aware_recall


def create_backend(name: str, bits: int, **params: Any) -> HammingBackend:
    """An empty backend ``name`` for ``bits``-bit codes (KeyError lists the known names)."""
    return BACKENDS.get(name)(bits, **params)


def load_backend(path: str | os.PathLike[str], **params: Any) -> HammingBackend:
    """Load a saved backend of whichever kind the file holds (see ``HammingBackend.load``)."""
    header, _ = read_backend_file(Path(path))
    try:
        cls = BACKENDS.get(header["backend"])
    except KeyError as err:
        raise IndexFileError(f"{path}: {err.args[0]}") from None
    return cls.load(path, **params)


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "PAD_DIST",
    "PAD_ID",
    "BackendError",
    "DistinctBackend",
    "DuplicateIdError",
    "FlatBackend",
    "HNSWBackend",
    "HammingBackend",
    "IVFBackend",
    "IndexFileError",
    "MilvusBackend",
    "MultiHashBackend",
    "NumpyBackend",
    "UnknownIdError",
    "backend_help",
    "backend_names",
    "backend_params_help",
    "backend_table",
    "check_shard_backend",
    "create_backend",
    "id_recall",
    "load_backend",
    "tie_aware_recall",
]
