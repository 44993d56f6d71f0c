"""Commits made by another process (a nightly ``cxrhash index`` appending to the served
index, a ``remove``) become visible to the server without a restart.

The manifest ``index.json`` is the commit point of an index, replaced atomically
(:mod:`cxrhash.index.writing`). Before a request reads the index, :class:`RefreshGuard`
compares the manifest's ``stat`` (inode, size, mtime) with the one last seen, a few
microseconds; only when it changed does the worker thread compare the manifest itself with
the open handle's (:meth:`~cxrhash.index.reader.IndexReader.is_current`) and, when another
process committed, open the index again and swap it in between two jobs. Opening reads
only the committed state, so a reader never sees another process's half-written add. The
handle replaced is closed at the next swap, not at once: a job already bound to it (a route
passes ``searcher.index.case`` to the worker) still finds it open, serving its last commit.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio

from cxrhash.index.errors import HashIndexError
from cxrhash.index.manifest import MANIFEST_NAME
from cxrhash.index.store import HashIndex
from cxrhash.serve.middleware import ASGIApp, Receive, Scope, Send
from cxrhash.serve.searcher import Searcher

LOG = logging.getLogger(__name__)
_StatKey = tuple[int, int, int]


def _stat_key(manifest: Path) -> _StatKey | None:
    try:
        st = os.stat(manifest)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class IndexRefresher:
    """Keeps ``searcher.index`` at the last commit of the index folder, whoever made it."""

    def __init__(self, searcher: Searcher, index_dir: Path) -> None:
        self.searcher = searcher
        self.index_dir = Path(index_dir)
        self.manifest = self.index_dir / MANIFEST_NAME
        self._seen = _stat_key(self.manifest)
        self._retired: HashIndex | None = None
        self.reopened = 0

    def maybe_changed(self) -> bool:
        """Whether the manifest was replaced since the last :meth:`refresh` (any thread)."""
        return _stat_key(self.manifest) != self._seen

    def refresh(self, force: bool = False) -> bool:
        """On the worker thread: open the index again if another process committed since
        the open handle's view (checked when the manifest's stat changed, or ``force``).
        Returns whether it did. A failed open is logged and the old handle kept."""
        key = _stat_key(self.manifest)
        if key == self._seen and not force:
            return False
        self._seen = key  # before reading: a commit after this changes the stat again
        old = self.searcher.index
        try:
            if old.is_current():
                return False
            new = HashIndex.open(self.index_dir, model_id=self.searcher.model_id)
        except (OSError, HashIndexError) as err:
            LOG.error("the index changed on disk but cannot be opened again: %s", err)
            return False
        self.searcher.index = new
        if self._retired is not None:
            self._retired.close()
        self._retired = old  # a job may hold it still (``_run(index.case, …)``): close it later
        self.reopened += 1
        LOG.info("index changed by another process: now %d films", len(new))
        return True


class RefreshGuard:
    """ASGI layer: before a request to the API, bring the index up to date if its manifest
    was replaced (a job on the worker thread, waited for off the event loop)."""

    def __init__(self, app: ASGIApp, *, refresher: IndexRefresher) -> None:
        self.app = app
        self.refresher = refresher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            if self.refresher.maybe_changed():
                searcher = self.refresher.searcher
                await anyio.to_thread.run_sync(searcher._run, self.refresher.refresh)
        await self.app(scope, receive, send)
