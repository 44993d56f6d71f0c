"""Search results with their metadata: :class:`SearchHit`, one per hit, best first."""

from __future__ import annotations

from functools import partial
from itertools import repeat
from typing import NamedTuple

import numpy as np

from cxrhash.index.meta import RowMeta


class SearchHit(NamedTuple):
    """One search result: its rank (0 = best), database row (= id), Hamming distance,
    metadata, and the re-rank score of a two-stage search (``None`` without one).

    A named tuple rather than a frozen dataclass: building k of them per query
    is part of the search time the store must keep near FAISS's.
    """

    rank: int
    row: int
    case_id: str
    distance: int
    findings: str
    source_path: str | None = None
    score: float | None = None


def hits_per_query(
    rows: np.ndarray, dists: np.ndarray, scores: np.ndarray | None, meta: list[RowMeta]
) -> list[list[SearchHit]]:
    """The Q×k search result ``rows``/``dists``/``scores`` as one list of hits per query.

    Args:
        rows: Q×k rows, −1 where a query has fewer hits (at the end of its row only).
        dists: their Hamming distances.
        scores: their re-rank scores, or ``None`` without a re-rank.
        meta: ``(case_id, findings, source_path)`` of every row ≥ 0, in row-major order.
    """
    per_query = (rows >= 0).sum(axis=1).tolist()
    q_scores = repeat(repeat(None)) if scores is None else scores.tolist()
    hits, at = [], 0
    make = partial(tuple.__new__, SearchHit)  # SearchHit._make without its Python frame
    for q_rows, q_dists, n, q_score in zip(
        rows.tolist(), dists.tolist(), per_query, q_scores, strict=False
    ):
        case_ids, findings, paths = zip(*meta[at : at + n], strict=True) if n else ((),) * 3
        at += n
        fields = zip(range(n), q_rows, case_ids, q_dists, findings, paths, q_score, strict=False)
        hits.append(list(map(make, fields)))
    return hits
