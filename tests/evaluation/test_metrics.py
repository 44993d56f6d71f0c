"""Tests for cxrhash.evaluation.metrics against hand-worked numbers and a loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxrhash.evaluation.metrics import pr_curve, rank_by_cosine, retrieval_metrics
from cxrhash.index.codes import hamming_distances, hamming_rank, pack_codes

# --------------------------------------------------------------------------- hand-worked


def test_hand_worked_single_query() -> None:
    query = np.array([[1, 1, 0]])  # findings {A, B}
    db = np.array(
        [
            [1, 0, 0],  # rank 1: r = 1, relevant
            [0, 0, 1],  # rank 2: r = 0
            [1, 1, 0],  # rank 3: r = 2, relevant
            [0, 0, np.nan],  # rank 4: r = 0 (NaN counts as 0)
            [0, 1, 1],  # rank 5: r = 1, relevant
        ]
    )
    order = np.array([[0, 1, 2, 3, 4]])
    distances = np.array([[0, 2, 2, 3, 5]])
    m = retrieval_metrics(order, query, db, ks=(3,), distances=distances, radius=2)

    # P@n at the relevant ranks: 1/1, 2/3, 3/5; R = 3
    # AP = (1 + 2/3 + 3/5) / 3 = (15 + 10 + 9) / 45 = 34/45
    assert m["mAP"] == pytest.approx(34 / 45, abs=1e-12)
    # AP@3, R_3 = 2 relevant in the top 3: (1 + 2/3) / 2 = 5/6
    assert m["mAP@3"] == pytest.approx(5 / 6, abs=1e-12)
    # AP@3 normalised by min(k, R) = min(3, 3) = 3: (1 + 2/3) / 3 = 5/9
    assert m["mAP@3_minkR"] == pytest.approx(5 / 9, abs=1e-12)
    # P@3 = 2/3, R@3 = 2/3
    assert m["P@3"] == pytest.approx(2 / 3, abs=1e-12)
    assert m["R@3"] == pytest.approx(2 / 3, abs=1e-12)
    # DCG@3 = (2^1-1)/log2(2) + (2^0-1)/log2(3) + (2^2-1)/log2(4) = 1 + 0 + 3/2 = 2.5
    # ideal order of r over the whole database: 2, 1, 1, 0, 0
    # IDCG@3 = 3/log2(2) + 1/log2(3) + 1/log2(4) = 3 + 0.6309298 + 0.5
    idcg = 3 + 1 / math.log2(3) + 0.5
    assert m["nDCG@3"] == pytest.approx(2.5 / idcg, abs=1e-12)
    # ACG@3 = (1 + 0 + 2) / 3 = 1
    assert m["ACG@3"] == pytest.approx(1.0, abs=1e-12)
    # ACG@n at relevant ranks: n=1: 1/1, n=3: 3/3, n=5: 4/5 -> (1 + 1 + 0.8) / 3
    assert m["mAP_w"] == pytest.approx(2.8 / 3, abs=1e-12)
    # within radius 2: ranks 1-3, of which 2 relevant -> 2/3
    assert m["P@H<=2"] == pytest.approx(2 / 3, abs=1e-12)


def test_query_without_relevant_items_counts_as_zero() -> None:
    query = np.array([[1, 0], [0, 0]])  # second query has no finding at all
    db = np.array([[1, 0], [0, 1], [1, 1]])
    order = np.array([[0, 2, 1], [0, 1, 2]])
    m = retrieval_metrics(order, query, db, ks=(2,))
    # query 0: relevant at ranks 1 and 2 -> AP 1; query 1: AP 0, still averaged
    assert m["mAP"] == pytest.approx(0.5)
    assert m["nDCG@2"] == pytest.approx(0.5)
    assert m["R@2"] == pytest.approx(0.5)


def test_perfect_ranking_scores_one_and_reversed_scores_lower() -> None:
    rng = np.random.default_rng(0)
    query = rng.integers(0, 2, size=(6, 4))
    query[:, 0] = 1
    db = rng.integers(0, 2, size=(40, 4))
    db[:5, 0] = 1  # every query has relevant items
    levels = query @ db.T
    perfect = np.argsort(-levels, axis=1, kind="stable")
    reverse = perfect[:, ::-1]
    good = retrieval_metrics(perfect, query, db, ks=(5, 40))
    bad = retrieval_metrics(reverse, query, db, ks=(5, 40))
    assert good["mAP"] == pytest.approx(1.0)
    assert good["mAP@5"] == pytest.approx(1.0)
    assert good["nDCG@5"] == pytest.approx(1.0)
    assert good["nDCG@40"] == pytest.approx(1.0)
    for key in ("mAP", "mAP@5", "mAP@5_minkR", "nDCG@5", "nDCG@40", "mAP_w", "P@5", "ACG@5"):
        assert bad[key] < good[key], key


# --------------------------------------------------------------------------- brute force


def _reference(order, query_labels, db_labels, ks, distances, radius):
    """Per-query loops straight from the SPEC §6 formulas."""
    q_lab = np.nan_to_num(np.asarray(query_labels, float))
    db_lab = np.nan_to_num(np.asarray(db_labels, float))
    n_db = len(db_lab)
    out: dict[str, list[float]] = {}

    def put(key: str, value: float) -> None:
        out.setdefault(key, []).append(value)

    for q in range(len(q_lab)):
        r_all = [int(sum(q_lab[q] * db_lab[i])) for i in range(n_db)]
        r = [r_all[i] for i in order[q]]
        rel = [x >= 1 for x in r]
        total = sum(rel)

        def precision_at(n: int, rel=rel) -> float:
            return sum(rel[:n]) / n

        def acg_at(n: int, r=r) -> float:
            return sum(r[:n]) / n

        ap_sum = sum(precision_at(n + 1) for n in range(n_db) if rel[n])
        put("mAP", ap_sum / total if total else 0.0)
        weighted = sum(acg_at(n + 1) for n in range(n_db) if rel[n])
        put("mAP_w", weighted / total if total else 0.0)
        ideal = sorted(r_all, reverse=True)
        for k in ks:
            kk = min(k, n_db)
            part = sum(precision_at(n + 1) for n in range(kk) if rel[n])
            r_k = sum(rel[:kk])
            put(f"mAP@{k}", part / r_k if r_k else 0.0)
            put(f"mAP@{k}_minkR", part / min(k, total) if total else 0.0)
            put(f"P@{k}", r_k / kk)
            put(f"R@{k}", r_k / total if total else 0.0)
            dcg = sum((2 ** r[n] - 1) / math.log2(n + 2) for n in range(kk))
            idcg = sum((2 ** ideal[n] - 1) / math.log2(n + 2) for n in range(kk))
            put(f"nDCG@{k}", dcg / idcg if idcg else 0.0)
            put(f"ACG@{k}", acg_at(kk))
        if distances is not None:
            inside = [n for n in range(n_db) if distances[q][n] <= radius]
            hits = sum(rel[n] for n in inside)
            put(f"P@H<={radius}", hits / len(inside) if inside else 0.0)
    return {key: float(np.mean(values)) for key, values in out.items()}


def _random_case(seed: int, n_q: int = 9, n_db: int = 70, bits: int = 8, classes: int = 5):
    rng = np.random.default_rng(seed)
    q_lab = (rng.random((n_q, classes)) < 0.3).astype(float)
    db_lab = (rng.random((n_db, classes)) < 0.3).astype(float)
    q_lab[0] = 0  # a query with no relevant item at all
    q_lab[1, :] = 0
    q_lab[1, -1] = 1
    db_lab[:, -1] = 0  # ... and another whose only finding nobody shares
    db_lab[rng.random((n_db, classes)) < 0.05] = np.nan
    distinct = rng.integers(0, 2, size=(6, bits))  # few codes -> many distance ties
    db_codes = pack_codes(distinct[rng.integers(0, 6, size=n_db)])
    q_codes = pack_codes(rng.integers(0, 2, size=(n_q, bits)))
    return q_lab, db_lab, q_codes, db_codes


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_matches_loop_reference_on_random_cases(seed: int, monkeypatch) -> None:
    import cxrhash.evaluation.metrics as metrics_mod

    q_lab, db_lab, q_codes, db_codes = _random_case(seed)
    order, dist = hamming_rank(q_codes, db_codes)
    ks = (1, 10, 70, 100)
    want = _reference(order, q_lab, db_lab, ks, dist, 2)
    got = retrieval_metrics(order, q_lab, db_lab, ks=ks, distances=dist, radius=2)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    monkeypatch.setattr(metrics_mod, "_BLOCK_ELEMENTS", 150)  # two queries per chunk
    chunked = retrieval_metrics(order, q_lab, db_lab, ks=ks, distances=dist, radius=2)
    for key in want:
        assert chunked[key] == pytest.approx(want[key], abs=1e-9), key


@pytest.mark.parametrize("seed", [0, 1])
def test_pr_curve_matches_loop_reference(seed: int) -> None:
    q_lab, db_lab, q_codes, db_codes = _random_case(seed)
    bits = 8
    dist = hamming_distances(q_codes, db_codes)
    precision, recall = pr_curve(dist, q_lab, db_lab, bits)
    rel = (np.nan_to_num(q_lab) @ np.nan_to_num(db_lab).T) > 0
    for d in range(bits + 1):
        ps, rs = [], []
        for q in range(len(q_lab)):
            inside = [i for i in range(len(db_lab)) if dist[q, i] <= d]
            hits = sum(rel[q, i] for i in inside)
            ps.append(hits / len(inside) if inside else 0.0)
            rs.append(hits / rel[q].sum() if rel[q].sum() else 0.0)
        assert precision[d] == pytest.approx(np.mean(ps), abs=1e-12)
        assert recall[d] == pytest.approx(np.mean(rs), abs=1e-12)
    order, sorted_dist = hamming_rank(q_codes, db_codes)
    m = retrieval_metrics(order, q_lab, db_lab, distances=sorted_dist, radius=2)
    assert precision[2] == pytest.approx(m["P@H<=2"], abs=1e-12)
    assert recall[bits] == pytest.approx(np.mean([rel[q].any() for q in range(len(q_lab))]))


# --------------------------------------------------------------------------- ties, rankings


def test_ties_keep_database_order() -> None:
    db_codes = pack_codes(np.array([[1, 0] * 4, [0, 1] * 4, [1, 0] * 4, [1, 0] * 4, [0, 1] * 4]))
    q_codes = pack_codes(np.array([[1, 0] * 4]))
    order, dist = hamming_rank(q_codes, db_codes)
    np.testing.assert_array_equal(order, [[0, 2, 3, 1, 4]])
    np.testing.assert_array_equal(dist, [[0, 0, 0, 8, 8]])
    feats = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(rank_by_cosine(np.array([[5.0, 0.0]]), feats), [[0, 2, 3, 1, 4]])
    # the tie order decides the metrics: only item 3 is relevant, at rank 3 -> AP 1/3
    q_lab = np.array([[1, 0]])
    db_lab = np.array([[0, 1], [0, 1], [0, 1], [1, 0], [0, 1]])
    assert retrieval_metrics(order, q_lab, db_lab, ks=(1,))["mAP"] == pytest.approx(1 / 3)


def test_rank_by_cosine_matches_brute_force(monkeypatch) -> None:
    import cxrhash.evaluation.metrics as metrics_mod

    rng = np.random.default_rng(7)
    q = rng.normal(size=(5, 6))
    db = rng.normal(size=(30, 6))
    db[10] = 0.0  # zero vector: cosine 0, no NaN
    monkeypatch.setattr(metrics_mod, "_BLOCK_ELEMENTS", 60)
    order = rank_by_cosine(q, db)
    for qi in range(5):
        cos = [
            0.0
            if not db[i].any()
            else q[qi] @ db[i] / np.linalg.norm(q[qi]) / np.linalg.norm(db[i])
            for i in range(30)
        ]
        np.testing.assert_array_equal(order[qi], sorted(range(30), key=lambda i: -cos[i]))
    np.testing.assert_array_equal(rank_by_cosine(q, db, k=4), order[:, :4])


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_named() -> None:
    order = np.array([[0, 1, 2]])
    db = np.array([[1, 0], [0, 1], [1, 1]])
    with pytest.raises(ValueError, match="db_labels row 1, column 0: expected 0, 1 or NaN"):
        retrieval_metrics(order, np.array([[1, 0]]), np.array([[1, 0], [-1, 1], [1, 1]]))
    with pytest.raises(ValueError, match="order row 0 is not a permutation"):
        retrieval_metrics(np.array([[0, 0, 2]]), np.array([[1, 0]]), db)
    with pytest.raises(ValueError, match="full ranking"):
        retrieval_metrics(order[:, :2], np.array([[1, 0]]), db)
    with pytest.raises(ValueError, match="3 columns"):
        retrieval_metrics(order, np.array([[1, 0, 0]]), db)
