"""Two-stage search: a Hamming shortlist re-ranked by the query's float outputs.

A Hamming ranking of k-bit codes has only k + 1 distinct distances, so a
database of many similar films is mostly ties, which the first stage breaks by
database order. The second stage orders the shortlist of the L Hamming-nearest
items by a finer score computed from the query's pre-binarisation outputs f_q
(``HashOutput.hash``, ``Encoded.hashes``):

* ``asymmetric``: ⟨f_q, b_i⟩ with b_i ∈ {−1, +1}^k the database code (bit 1 ⇔
  +1, the :func:`cxrhash.index.codes.pack_codes` layout). Nothing beyond the
  codes is stored; items of equal codes still tie (and keep Hamming, then id
  order), but unequal codes at one Hamming distance are told apart by how far
  the query's outputs are from zero on the bits where they differ.
* ``floats``: cosine between f_q and the database item's stored float outputs
  (float16, 2·k bytes per film), which also separates items of equal codes.

Higher scores come first; ties fall back to (Hamming distance, id), so a
re-rank never reorders items it cannot tell apart. The default shortlist is
L = max(10·k, 100) for k results: wide enough that the re-rank can pull an
item up from far below the k-th place (at 64 bits and k = 10 a shortlist of
100 spans several Hamming shells), small enough that scoring it costs a
fraction of the Hamming scan (``docs/search.md``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from cxrhash.index.codes import hamming_rank

RerankMode = Literal["none", "asymmetric", "floats"]
RERANK_MODES: tuple[RerankMode, ...] = ("none", "asymmetric", "floats")


def default_shortlist(k: int) -> int:
    """The shortlist length L used for ``k`` results when none is given: max(10·k, 100)."""
    return max(10 * int(k), 100)


def check_mode(mode: str) -> RerankMode:
    """``mode`` if it is a re-rank mode, else ValueError listing them."""
    if mode not in RERANK_MODES:
        raise ValueError(f"unknown re-rank mode {mode!r}; choose one of {', '.join(RERANK_MODES)}")
    return mode  # type: ignore[return-value]


def shortlist_length(k: int, shortlist: int | None) -> int:
    """The shortlist length for ``k`` results: ``shortlist`` (≥ k) or :func:`default_shortlist`."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if shortlist is None:
        return default_shortlist(k)
    if isinstance(shortlist, bool) or not isinstance(shortlist, int | np.integer):
        raise ValueError(f"shortlist must be an integer, got {shortlist!r}")
    if shortlist < k:
        raise ValueError(
            f"the shortlist ({shortlist}) must hold at least the k = {k} results it is cut to"
        )
    return int(shortlist)


def check_query_floats(floats: np.ndarray | None, n_queries: int, bits: int) -> np.ndarray:
    """Query float outputs as a finite Q×``bits`` float32 array, or ValueError."""
    if floats is None:
        raise ValueError(
            "re-ranking needs the queries' float outputs (the pre-binarisation hash outputs)"
        )
    arr = np.asarray(floats, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.shape != (n_queries, bits):
        raise ValueError(
            f"query float outputs must be {n_queries}×{bits} (one row per query code), "
            f"got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError("query float outputs hold NaN or infinite values")
    return arr


def asymmetric_scores(query_floats: np.ndarray, packed: np.ndarray, bits: int) -> np.ndarray:
    """⟨f_q, b_i⟩ for each query and each of its shortlisted codes.

    Args:
        query_floats: Q×k query float outputs.
        packed: Q×L×B packed codes of each query's shortlist.
        bits: code length k.

    Returns:
        Q×L ``float32`` scores (higher = nearer).
    """
    signs = np.unpackbits(packed, axis=-1, count=bits).astype(np.float32)
    signs *= 2.0
    signs -= 1.0
    # einsum reduces each (query, item) pair alike, so equal codes get equal scores
    return np.einsum("qlk,qk->ql", signs, np.asarray(query_floats, np.float32))


def cosine_scores(query_floats: np.ndarray, floats: np.ndarray) -> np.ndarray:
    """Cosine between each query's float outputs and its shortlisted items' stored ones.

    Args:
        query_floats: Q×k query float outputs.
        floats: Q×L×k stored float outputs of each query's shortlist (any float dtype).

    Returns:
        Q×L ``float32`` cosines; a zero vector has cosine 0 with everything.
    """
    q = np.asarray(query_floats, np.float32)
    db = np.asarray(floats, np.float32)
    # einsum reduces each (query, item) pair alike, so equal rows get equal cosines
    dots = np.einsum("qlk,qk->ql", db, q)
    norms = (
        np.sqrt(np.einsum("qlk,qlk->ql", db, db)) * np.sqrt(np.einsum("qk,qk->q", q, q))[:, None]
    )
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def rerank_shortlist(
    rows: np.ndarray, distances: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order each query's shortlist by descending score, then Hamming distance, then id.

    Args:
        rows: Q×L database ids (−1 = padding of an approximate backend, kept last).
        distances: Q×L Hamming distances aligned with ``rows``.
        scores: Q×L re-rank scores aligned with ``rows``.

    Returns:
        ``(rows, distances, scores)`` permuted per query.
    """
    order = np.lexsort((rows, distances, -scores, rows < 0), axis=-1)
    at = (np.arange(len(order))[:, None], order)  # one index for the three gathers
    return rows[at], distances[at], scores[at]


def two_stage_rank(
    q_packed: np.ndarray,
    q_floats: np.ndarray,
    db_packed: np.ndarray,
    bits: int,
    *,
    mode: RerankMode,
    shortlist: int,
    db_floats: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The full two-stage ranking of the database for each query (used to score it).

    The L = ``shortlist`` Hamming-nearest items (:func:`hamming_rank`, ties by
    database order) come first, re-ranked by ``mode``; the rest follow in
    Hamming order, so mAP over the whole database stays defined.

    Args:
        q_packed: Q×B packed query codes.
        q_floats: Q×k query float outputs.
        db_packed: N×B packed database codes.
        bits: code length k.
        mode: ``asymmetric`` or ``floats`` (``none`` is :func:`hamming_rank` itself).
        shortlist: L (clipped to N).
        db_floats: N×k database float outputs, needed by ``floats``.

    Returns:
        ``(indices, distances)``: Q×N ``int64`` database rows, best first, and
        their ``int32`` Hamming distances.
    """
    order, dist = hamming_rank(q_packed, db_packed, None)
    if check_mode(mode) == "none":
        return order, dist
    head = order[:, : min(shortlist, order.shape[1])]
    if mode == "asymmetric":
        scores = asymmetric_scores(q_floats, np.asarray(db_packed)[head], bits)
    elif db_floats is None:
        raise ValueError("the 'floats' re-rank needs the database's float outputs")
    else:
        scores = cosine_scores(q_floats, np.asarray(db_floats)[head])
    rows, d, _ = rerank_shortlist(head, dist[:, : head.shape[1]], scores)
    order[:, : head.shape[1]] = rows
    dist[:, : head.shape[1]] = d
    return order, dist
