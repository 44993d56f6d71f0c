"""Durable file writes: after a crash a reader finds the old bytes or the new, never a mix.

:func:`write_json_atomic` replaces a small JSON file (the manifest, a saved backend's
sidecar, ``model.json``) by a temp file, fsync and ``os.replace``; :func:`write_at`
appends rows to a shard file in place; :func:`fsync_path` makes a new directory entry
(a renamed or created file) durable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cxrhash.index.errors import IndexCorruptError


def write_json_atomic(target: Path, payload: dict[str, Any]) -> None:
    """Replace ``target`` by ``payload``: readers see the old or the new file, never a mix."""
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    fsync_path(target.parent)


def fsync_path(path: Path) -> None:
    """fsync a file or directory by path (a directory's fsync makes renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_at(path: Path, offset: int, data: np.ndarray) -> None:
    """Write ``data`` at byte ``offset``, cut the file after it and fsync (creating the file).

    Raises:
        IndexCorruptError: the file holds fewer than ``offset`` bytes.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < offset:
            raise IndexCorruptError(
                f"{path} holds {os.fstat(fd).st_size} bytes, fewer than the {offset} committed "
                "ones (was it truncated while the index was open?)"
            )
        view = data.data
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], offset + written)
        os.ftruncate(fd, offset + written)
        os.fsync(fd)
    finally:
        os.close(fd)
