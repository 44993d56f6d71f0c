"""Retrieval metrics of SPEC §6 and the float-feature ranking they are applied to.

For a query q and database item i the similarity level is r_i = |Y_q ∩ Y_i|
(shared findings, "No Finding" included when the caller added that column) and
item i is relevant when r_i ≥ 1. Every metric is computed per query over a
full ranking (``order``, best first) and averaged over all queries.

Conventions where the literature differs:

* A query with no relevant item in the database gets AP = AP@k = mAP_w =
  R@k = nDCG@k = 0 and still counts in the mean (as DeepHash-pytorch's
  ``CalcTopMap``, which skips it in the sum but divides by all queries).
* ``mAP@k`` divides by R_k, the number of relevant items in the top k
  (DeepHash-pytorch); ``mAP@k_minkR`` divides by min(k, R), R = relevant in
  the whole database (so missing relevant items in the top k are penalised).
* ``P@H<=r``: precision of the items within Hamming radius r; a query with
  nothing inside the radius contributes precision 0 (DeepHash convention).
* For k > N the cut-off is N (``P@k`` and ``ACG@k`` then divide by N).

Queries are processed in chunks with vectorised cumulative sums in float64,
so Q×N with N ~ 10^5 fits in a few hundred MB at most.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

LOG = logging.getLogger(__name__)

# Elements of one Q_chunk×N working matrix (8 MB in float64).
_BLOCK_ELEMENTS = 1 << 20


def rank_by_cosine(q_feats: np.ndarray, db_feats: np.ndarray, k: int | None = None) -> np.ndarray:
    """Rank the database by descending cosine similarity (the float upper bound).

    Ties keep database order (stable argsort of −cosine), like
    :func:`cxrhash.index.codes.hamming_rank`. A zero vector has cosine 0 with
    everything.

    Args:
        q_feats: Q×D query features.
        db_feats: N×D database features.
        k: keep the best ``k`` (clipped to N); ``None`` returns the full ranking.

    Returns:
        Q×min(k, N) ``int64`` database indices, best first.
    """
    q = _unit_rows(q_feats, "q_feats")
    db = _unit_rows(db_feats, "db_feats")
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"q_feats have {q.shape[1]} dimensions but db_feats have {db.shape[1]}")
    if k is not None and k <= 0:
        raise ValueError(f"k must be positive or None, got {k}")
    n_db = db.shape[0]
    keep = n_db if k is None else min(k, n_db)
    order = np.empty((q.shape[0], keep), dtype=np.int64)
    step = max(1, _BLOCK_ELEMENTS // max(1, n_db))
    for q0 in range(0, q.shape[0], step):
        sim = q[q0 : q0 + step] @ db.T
        order[q0 : q0 + step] = np.argsort(-sim, axis=1, kind="stable")[:, :keep]
    return order


def retrieval_metrics(
    order: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    ks: Sequence[int] = (10, 100),
    distances: np.ndarray | None = None,
    radius: int = 2,
) -> dict[str, float]:
    """All ranking metrics of SPEC §6, averaged over queries.

    Args:
        order: Q×N full ranking of database indices per query, best first.
        query_labels: Q×C labels in {0, 1, NaN} (NaN counts as 0).
        db_labels: N×C labels in {0, 1, NaN}.
        ks: cut-offs for the @k metrics.
        distances: Q×N Hamming distances aligned with ``order``; adds ``P@H<=radius``.
        radius: Hamming radius for ``P@H<=radius``.

    Returns:
        ``mAP``, ``mAP_w`` and, per k, ``mAP@k``, ``mAP@k_minkR``, ``P@k``,
        ``R@k``, ``nDCG@k``, ``ACG@k``; plus ``P@H<=radius`` with distances.

    Raises:
        ValueError: labels outside {0, 1, NaN}, mismatched shapes, or a row of
            ``order`` that is not a permutation of the database.
    """
    q_lab = _binary_labels(query_labels, "query_labels")
    db_lab = _binary_labels(db_labels, "db_labels")
    n_q, n_db = _check_pair(q_lab, db_lab)
    order = np.asarray(order)
    if order.shape != (n_q, n_db):
        raise ValueError(
            f"order must be a full ranking of shape (queries, database) = ({n_q}, {n_db}), "
            f"got {order.shape}"
        )
    if distances is not None and np.shape(distances) != order.shape:
        raise ValueError(
            f"distances must have the shape of order {order.shape}, got {np.shape(distances)}"
        )
    if n_q == 0 or n_db == 0:
        raise ValueError(f"need at least one query and one database item, got {n_q} and {n_db}")
    ks = [int(k) for k in ks]
    if any(k <= 0 for k in ks):
        raise ValueError(f"cut-offs must be positive, got {ks}")

    sums: defaultdict[str, float] = defaultdict(float)
    step = max(1, _BLOCK_ELEMENTS // n_db)
    for q0 in range(0, n_q, step):
        chunk_order = np.asarray(order[q0 : q0 + step], dtype=np.int64)
        _check_permutations(chunk_order, n_db, q0)
        levels = _similarity_levels(q_lab[q0 : q0 + step], db_lab)
        chunk_dist = None if distances is None else np.asarray(distances[q0 : q0 + step])
        _accumulate(sums, levels, chunk_order, ks, chunk_dist, radius)
    return {key: value / n_q for key, value in sums.items()}


def pr_curve(
    distances_full: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of the Hamming ball of radius 0..bits, averaged over queries.

    Per query and radius d: precision = relevant within d / items within d
    (0 when the ball is empty, as ``P@H<=2``), recall = relevant within d / R
    (0 when R = 0). So ``precision[2]`` equals ``retrieval_metrics``'s ``P@H<=2``.

    Args:
        distances_full: Q×N Hamming distances in database order (any order works).
        query_labels: Q×C labels in {0, 1, NaN}.
        db_labels: N×C labels in {0, 1, NaN}.
        bits: code length k.

    Returns:
        ``(precision, recall)``, each of length ``bits + 1`` (index = radius).
    """
    q_lab = _binary_labels(query_labels, "query_labels")
    db_lab = _binary_labels(db_labels, "db_labels")
    n_q, n_db = _check_pair(q_lab, db_lab)
    dist = np.asarray(distances_full)
    if dist.shape != (n_q, n_db):
        raise ValueError(f"distances_full must have shape ({n_q}, {n_db}), got {dist.shape}")
    if n_q == 0:
        raise ValueError("need at least one query")
    if dist.size and (dist.min() < 0 or dist.max() > bits):
        raise ValueError(
            f"Hamming distances must lie in 0..{bits}, found {dist.min()}..{dist.max()}"
        )
    n_levels = bits + 1
    precision = np.zeros(n_levels)
    recall = np.zeros(n_levels)
    step = max(1, _BLOCK_ELEMENTS // max(1, n_db))
    for q0 in range(0, n_q, step):
        rel = _similarity_levels(q_lab[q0 : q0 + step], db_lab) > 0
        d = dist[q0 : q0 + step].astype(np.int64)
        rows = d.shape[0]
        flat = (d + n_levels * np.arange(rows)[:, None]).ravel()
        size = rows * n_levels
        in_ball = np.bincount(flat, minlength=size).reshape(rows, n_levels).cumsum(axis=1)
        hits = np.bincount(flat, weights=rel.ravel(), minlength=size)
        hits = hits.reshape(rows, n_levels).cumsum(axis=1)
        precision += _safe_div(hits, in_ball).sum(axis=0)
        recall += _safe_div(hits, rel.sum(axis=1, keepdims=True)).sum(axis=0)
    return precision / n_q, recall / n_q


def _accumulate(
    sums: defaultdict[str, float],
    levels: np.ndarray,
    order: np.ndarray,
    ks: list[int],
    distances: np.ndarray | None,
    radius: int,
) -> None:
    """Add this chunk's per-query metric values to ``sums``."""
    n_db = levels.shape[1]
    r = np.take_along_axis(levels, order, axis=1).astype(np.float64)
    rel = r > 0
    pos = np.arange(1, n_db + 1, dtype=np.float64)
    cum_rel = np.cumsum(rel, axis=1, dtype=np.float64)
    total_rel = cum_rel[:, -1]
    ap_cum = np.cumsum(rel * (cum_rel / pos), axis=1)
    cum_r = np.cumsum(r, axis=1)
    discount = 1.0 / np.log2(1.0 + pos)
    dcg_cum = np.cumsum((2.0**r - 1.0) * discount, axis=1)
    k_max = min(max(ks), n_db)
    ideal = -np.sort(-levels, axis=1)[:, :k_max].astype(np.float64)
    idcg_cum = np.cumsum((2.0**ideal - 1.0) * discount[:k_max], axis=1)

    sums["mAP"] += _safe_div(ap_cum[:, -1], total_rel).sum()
    sums["mAP_w"] += _safe_div((rel * (cum_r / pos)).sum(axis=1), total_rel).sum()
    for k in ks:
        c = min(k, n_db) - 1
        sums[f"mAP@{k}"] += _safe_div(ap_cum[:, c], cum_rel[:, c]).sum()
        sums[f"mAP@{k}_minkR"] += _safe_div(ap_cum[:, c], np.minimum(k, total_rel)).sum()
        sums[f"P@{k}"] += (cum_rel[:, c] / (c + 1)).sum()
        sums[f"R@{k}"] += _safe_div(cum_rel[:, c], total_rel).sum()
        sums[f"nDCG@{k}"] += _safe_div(dcg_cum[:, c], idcg_cum[:, c]).sum()
        sums[f"ACG@{k}"] += (cum_r[:, c] / (c + 1)).sum()
    if distances is not None:
        inside = distances <= radius
        sums[f"P@H<={radius}"] += _safe_div((inside & rel).sum(axis=1), inside.sum(axis=1)).sum()


def _similarity_levels(q_lab: np.ndarray, db_lab: np.ndarray) -> np.ndarray:
    """Q×N matrix of shared-label counts r = |Y_q ∩ Y_i| as int64."""
    return np.rint(q_lab @ db_lab.T).astype(np.int64)


def _binary_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Labels as a float64 0/1 matrix with NaN → 0; anything else is an error."""
    arr = np.array(labels, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (items × classes) array, got shape {arr.shape}")
    arr[np.isnan(arr)] = 0.0
    bad = (arr != 0.0) & (arr != 1.0)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} row {row}, column {col}: expected 0, 1 or NaN, got {arr[row, col]} "
            "(map uncertain labels before evaluation)"
        )
    return arr


def _check_pair(q_lab: np.ndarray, db_lab: np.ndarray) -> tuple[int, int]:
    if q_lab.shape[1] != db_lab.shape[1]:
        raise ValueError(
            f"query_labels have {q_lab.shape[1]} columns but db_labels have {db_lab.shape[1]}"
        )
    return q_lab.shape[0], db_lab.shape[0]


def _check_permutations(order: np.ndarray, n_db: int, first_row: int) -> None:
    """Raise unless each row of ``order`` holds every database index exactly once."""
    if order.size and (order.min() < 0 or order.max() >= n_db):
        row = first_row + int(np.argwhere((order < 0) | (order >= n_db))[0][0])
        raise ValueError(f"order row {row} holds an index outside 0..{n_db - 1}")
    rows = order.shape[0]
    flat = (order + n_db * np.arange(rows)[:, None]).ravel()
    counts = np.bincount(flat, minlength=rows * n_db).reshape(rows, n_db)
    bad_rows = np.flatnonzero((counts != 1).any(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"order row {first_row + int(bad_rows[0])} is not a permutation of the "
            f"{n_db} database items (metrics need the full ranking)"
        )


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0."""
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


def _unit_rows(feats: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(feats, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (items × dimensions) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        row = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise ValueError(f"{name} row {row} holds NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0)
