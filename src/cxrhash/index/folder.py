"""The folder of an index: its write lock, and the checks before an index is created in it.

Every process that creates, adds to or removes from an index holds ``write.lock``
(``flock``, never waiting: a second writer gets :class:`ConcurrentWriteError`). ``create``
holds it while it builds the files, ``index.json`` last, so of processes racing to create
one index exactly one does. A create killed before its manifest leaves only our own files
beside the lock file; the next create removes them.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cxrhash.index.errors import ConcurrentWriteError, HashIndexError, IndexExistsError, few
from cxrhash.index.manifest import MANIFEST_NAME, SHARD_DIR
from cxrhash.index.meta import META_NAME

LOG = logging.getLogger(__name__)

LOCK_NAME = "write.lock"
#: What a create killed before writing its manifest can leave beside the lock file.
_CREATE_LEFTOVERS = frozenset(
    {META_NAME, f"{META_NAME}-journal", SHARD_DIR, f"{MANIFEST_NAME}.tmp"}
)


@contextmanager
def write_lock(path: Path, doing: str) -> Iterator[None]:
    """Hold ``path/write.lock`` (flock, not waiting); ConcurrentWriteError if another holds it."""
    try:
        fh = open(path / LOCK_NAME, "ab")  # closing it releases the lock
    except OSError as err:
        raise HashIndexError(
            f"cannot open the lock file of the index at {path}: {err.strerror or err}"
        ) from err
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConcurrentWriteError(
                f"another process is {doing} the index at {path}; wait for it to finish"
            ) from None
        yield


def check_empty(path: Path, had_lock: bool, *, clean: bool) -> None:
    """Refuse a folder that is an index or holds other files; with ``clean`` (under the
    write lock) remove the leftovers of a create killed before its manifest (only ever our
    own file names, beside a lock file that was there before)."""
    if (path / MANIFEST_NAME).is_file():
        raise IndexExistsError(
            f"there is already a hash index at {path}; open it (`cxrhash index` adds to it) "
            "or choose a new folder"
        )
    names = sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME)
    shard_dir = path / SHARD_DIR
    if (
        names
        and had_lock
        and set(names) <= _CREATE_LEFTOVERS
        and (not shard_dir.exists() or (shard_dir.is_dir() and not any(shard_dir.iterdir())))
    ):
        if not clean:
            return
        LOG.warning("removing the leftovers of an interrupted create in %s: %s", path, names)
        for name in names:
            leftover = path / name
            if leftover.is_dir():
                leftover.rmdir()
            else:
                leftover.unlink()
        return
    if names:
        raise IndexExistsError(
            f"cannot create a hash index in {path}: the folder is not empty ({few(names)}) "
            f"and holds no {MANIFEST_NAME}, so it is not a cxrhash index; choose a new or "
            "empty folder, or point at the folder of an existing index"
        )
