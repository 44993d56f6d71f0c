"""A shard's codes mirrored in a server (the ``milvus`` backend): check the copy, send the rest.

The index folder stays the source of truth: a shard's committed codes, CRC-checked, and the
removal record. A backend that keeps its codes in a server
(:class:`~cxrhash.index.backends.base.ServerBackend`) is a copy of them that outlives the
process, so opening it adopts what the server already holds. Before an index searches it,
:func:`bring_up_to_date` compares that copy with the shard: ids the index never committed,
or codes other than the shard's, mean the store belongs to something else (another index
pointed at the same collection), which is an error; rows removed since are deleted, and
rows not there yet are sent. :func:`compare` reports the same differences without writing,
for ``verify``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrhash.index.backends.base import ServerBackend, few
from cxrhash.index.errors import HashIndexError


@dataclass(frozen=True)
class MirrorDiff:
    """How a server's copy of one shard differs from the shard (ids are index rows)."""

    foreign: np.ndarray  #: stored ids that are not committed rows of this shard
    wrong: np.ndarray  #: committed rows stored with another code
    removed: np.ndarray  #: rows removed from the index, still stored
    missing: np.ndarray  #: live rows not stored yet

    def problems(self, where: str) -> list[str]:
        """One sentence per way the copy is not this shard's (empty: it is)."""
        out = []
        if len(self.foreign):
            out.append(
                f"{where} holds {len(self.foreign)} id(s) this index never committed to the "
                f"shard ({few(self.foreign)}): it belongs to another index; give this index "
                "a collection of its own, or drop that one"
            )
        if len(self.wrong):
            out.append(
                f"{where} holds other codes than the shard under {len(self.wrong)} id(s) "
                f"({few(self.wrong)}): it belongs to another index or was changed outside "
                "cxrhash; give this index a collection of its own, or drop that one"
            )
        return out

    def notes(self, where: str) -> list[str]:
        """What the next search will fix: rows to send, removed rows to delete."""
        out = []
        if len(self.missing):
            out.append(f"{where} lacks {len(self.missing)} row(s), sent at the next search")
        if len(self.removed):
            out.append(f"{where} still holds {len(self.removed)} removed row(s)")
        return out


def compare(
    backend: ServerBackend, first: int, codes: np.ndarray, removed: np.ndarray
) -> MirrorDiff:
    """How ``backend``'s stored copy differs from the shard whose committed ``codes`` are
    rows ``first …`` (``removed``: the removed rows among them, ascending)."""
    stored = backend.ids
    inside = (stored >= first) & (stored < first + len(codes))
    foreign, mine = stored[~inside], stored[inside]
    wrong = np.empty(0, np.int64)
    if len(mine):
        held = backend.stored_codes(mine)
        wrong = mine[np.any(held != codes[mine - first], axis=1)]
    live = np.setdiff1d(np.arange(first, first + len(codes), dtype=np.int64), removed)
    return MirrorDiff(
        foreign=foreign,
        wrong=wrong,
        removed=np.intersect1d(mine, removed),
        missing=np.setdiff1d(live, mine),
    )


def bring_up_to_date(
    backend: ServerBackend, first: int, codes: np.ndarray, removed: np.ndarray, where: str
) -> None:
    """Make ``backend`` hold exactly the shard's live rows (see :func:`compare`).

    Raises:
        HashIndexError: the server holds ids or codes that are not this shard's.
    """
    diff = compare(backend, first, codes, removed)
    problems = diff.problems(where)
    if problems:
        raise HashIndexError(problems[0])
    if len(diff.removed):
        backend.remove(diff.removed)
    if len(diff.missing):
        backend.add(diff.missing, np.ascontiguousarray(codes[diff.missing - first]))
