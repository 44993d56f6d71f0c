"""Recall of approximate top-k results against exact ones.

With many equal distances, *which* ids fill the last places of an exact top-k
is arbitrary beyond the tie rule, so id overlap understates an approximate
backend that returns other, equally near items. :func:`tie_aware_recall`
counts a returned item as a hit when its distance is at most the exact k-th
distance; :func:`id_recall` is the plain id overlap, for comparison.
"""

from __future__ import annotations

import numpy as np


def tie_aware_recall(found_dists: np.ndarray, exact_dists: np.ndarray, k: int) -> float:
    """Mean over queries of |{j < k : 0 <= found_j <= exact_(k)}| / k.

    Args:
        found_dists: Q×≥k distances returned by the backend under test
            (−1 = padding, never a hit). They must be true Hamming distances.
        exact_dists: Q×≥k exact distances, ascending (−1 padding when the
            database holds fewer than k items: then the last real distance is
            the threshold and the denominator is the number of real items).
        k: the cut-off.

    Returns:
        Recall in [0, 1].
    """
    found, exact = _first_k(found_dists, exact_dists, k)
    valid = exact >= 0
    n_exact = valid.sum(axis=1)
    if np.any(n_exact == 0):
        raise ValueError("exact_dists has a query with no results; recall is undefined")
    threshold = np.where(valid, exact, -1).max(axis=1)
    hits = ((found >= 0) & (found <= threshold[:, None])).sum(axis=1)
    return float(np.mean(np.minimum(hits, n_exact) / n_exact))


def id_recall(found_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] ∩ exact[:k]| / k, ignoring −1 padding."""
    found, exact = _first_k(found_ids, exact_ids, k)
    scores = []
    for f, e in zip(found, exact, strict=True):
        e = e[e >= 0]
        if len(e) == 0:
            raise ValueError("exact_ids has a query with no results; recall is undefined")
        scores.append(len(np.intersect1d(f[f >= 0], e)) / len(e))
    return float(np.mean(scores))


def _first_k(found: np.ndarray, exact: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    found, exact = np.atleast_2d(found), np.atleast_2d(exact)
    if k < 1 or found.shape[1] < k or exact.shape[1] < k or len(found) != len(exact):
        raise ValueError(
            f"need Q×≥k arrays of equal Q for k={k}, got {found.shape} and {exact.shape}"
        )
    return found[:, :k], exact[:, :k]
