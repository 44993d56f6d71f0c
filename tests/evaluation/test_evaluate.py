"""The evaluation run: chunking, baselines, and that learned-like codes beat random ones."""

import numpy as np
import pytest

from cxrhash.data.labels import relevance_labels, with_no_finding_np
from cxrhash.encode import Encoded
from cxrhash.evaluation.baselines import lsh_codes, random_codes
from cxrhash.evaluation.evaluate import (
    ROW_ASYMMETRIC,
    ROW_FLOAT,
    ROW_HASH,
    ROW_LSH,
    ROW_RANDOM,
    ROW_STORED_FLOATS,
    code_metrics,
    evaluate_encoded,
    format_table,
)
from cxrhash.evaluation.metrics import retrieval_metrics
from cxrhash.index.codes import hamming_rank
from cxrhash.index.rerank import two_stage_rank


def _encoded(rng: np.random.Generator, labels: np.ndarray, bits: int, noise: float) -> Encoded:
    """Codes/features that depend on the label pattern plus noise (a 'trained' model)."""
    n, c = labels.shape
    proto = np.random.default_rng(0).standard_normal((c, bits))
    hashes = np.tanh(labels @ proto + noise * rng.standard_normal((n, bits))).astype(np.float32)
    feats = np.concatenate([hashes, rng.standard_normal((n, 8)).astype(np.float32)], axis=1)
    return Encoded(
        hashes=hashes,
        features=feats,
        labels=labels.astype(np.float32),
        indices=np.arange(n),
        case_ids=[str(i) for i in range(n)],
    )


def test_chunked_metrics_equal_one_shot_metrics() -> None:
    rng = np.random.default_rng(1)
    q, db = random_codes(37, 16, 1), random_codes(50, 16, 2)
    ql = (rng.random((37, 4)) < 0.3).astype(np.float32)
    dl = (rng.random((50, 4)) < 0.3).astype(np.float32)
    order, dist = hamming_rank(q, db, None)
    ref = retrieval_metrics(order, ql, dl, ks=(10, 100), distances=dist)
    # chunk_cells forces 1 query per chunk through code_metrics' chunking
    from cxrhash.evaluation import evaluate as ev

    got = ev.chunked_metrics(
        lambda sl: hamming_rank(q[sl], db, None), ql, dl, (10, 100), chunk_cells=1
    )
    for key in ("mAP", "mAP@100", "nDCG@100", "ACG@100", "mAP_w", "P@10"):
        assert abs(got[key] - ref[key]) < 1e-9, key
    assert abs(code_metrics(q, db, ql, dl, (10, 100))["mAP"] - ref["mAP"]) < 1e-9


def test_label_driven_codes_beat_random_and_lsh_is_reported() -> None:
    rng = np.random.default_rng(0)
    labels_q = (rng.random((60, 5)) < 0.25).astype(np.float32)
    labels_db = (rng.random((300, 5)) < 0.25).astype(np.float32)
    res = evaluate_encoded(
        _encoded(rng, labels_q, 32, 0.3),
        _encoded(rng, labels_db, 32, 0.3),
        bits=32,
        random_seeds=3,
        protocol="strict",
    )
    assert set(res.rows) == {
        ROW_HASH,
        ROW_ASYMMETRIC,
        ROW_STORED_FLOATS,
        ROW_FLOAT,
        ROW_LSH,
        ROW_RANDOM,
    }
    assert res.rows[ROW_HASH]["mAP"] > res.rows[ROW_RANDOM]["mAP"] + 0.1
    assert res.rows[ROW_RANDOM]["mAP_std"] >= 0.0
    assert "strict" in format_table([res])


def test_lsh_codes_are_deterministic_and_of_the_requested_length() -> None:
    rng = np.random.default_rng(0)
    db, q = rng.standard_normal((200, 24)), rng.standard_normal((10, 24))
    a_db, a_q = lsh_codes(db, q, 32)
    b_db, b_q = lsh_codes(db, q, 32)
    assert a_db.shape == (200, 4) and a_q.shape == (10, 4)
    assert np.array_equal(a_db, b_db) and np.array_equal(a_q, b_q)
    bits = np.unpackbits(a_db, axis=1)
    assert 0.2 < bits.mean() < 0.8  # centred features: bits are balanced, not constant


def test_two_stage_rows_score_the_reranked_shortlist_then_the_rest_in_hamming_order() -> None:
    rng = np.random.default_rng(4)
    labels_q = (rng.random((40, 5)) < 0.25).astype(np.float32)
    labels_db = (rng.random((250, 5)) < 0.25).astype(np.float32)
    q, db = _encoded(rng, labels_q, 16, 0.8), _encoded(rng, labels_db, 16, 0.8)
    res = evaluate_encoded(q, db, bits=16, random_seeds=1, shortlist=30)
    assert res.shortlist == 30
    q_rel = relevance_labels(with_no_finding_np(q.labels, True))
    db_rel = relevance_labels(with_no_finding_np(db.labels, True))
    for row, mode, floats in (
        (ROW_ASYMMETRIC, "asymmetric", None),
        (ROW_STORED_FLOATS, "floats", db.hashes.astype(np.float16)),  # as the index stores them
    ):
        order, dist = two_stage_rank(
            q.codes, q.hashes, db.codes, 16, mode=mode, shortlist=30, db_floats=floats
        )
        hamming, _ = hamming_rank(q.codes, db.codes)
        np.testing.assert_array_equal(order[:, 30:], hamming[:, 30:])  # the rest: Hamming order
        assert not np.array_equal(order[:, :30], hamming[:, :30])  # the shortlist: re-ranked
        want = retrieval_metrics(order, q_rel, db_rel, ks=(10, 100), distances=dist)
        for key in ("mAP", "mAP@100", "nDCG@100", "P@10", "P@H<=2"):
            assert res.rows[row][key] == pytest.approx(want[key], abs=1e-12), (row, key)
    # Hamming balls are sets: the re-rank does not change them
    assert res.rows[ROW_ASYMMETRIC]["P@H<=2"] == pytest.approx(res.rows[ROW_HASH]["P@H<=2"])
    assert res.timing["asymmetric_rank_ms_per_query"] > 0


def test_distinct_codes_of_a_collapsed_model_are_reported_beside_map() -> None:
    rng = np.random.default_rng(5)
    labels_q = (rng.random((30, 4)) < 0.3).astype(np.float32)
    labels_db = (rng.random((299, 4)) < 0.3).astype(np.float32)
    q, db = _encoded(rng, labels_q, 64, 0.3), _encoded(rng, labels_db, 64, 0.3)
    few = np.sign(rng.standard_normal((11, 64))).astype(np.float32)
    db.hashes = few[np.arange(299) % 11] * rng.uniform(0.5, 2.0, (299, 1)).astype(np.float32)
    res = evaluate_encoded(q, db, bits=64, random_seeds=2, protocol="strict")
    for row in (ROW_HASH, ROW_ASYMMETRIC):
        assert res.rows[row]["distinct_codes"] == 11
        assert res.rows[row]["distinct_share"] == pytest.approx(11 / 299)
    lsh = res.rows[ROW_LSH]
    assert (
        1 <= lsh["distinct_codes"] <= 299 and lsh["distinct_share"] == lsh["distinct_codes"] / 299
    )
    assert res.rows[ROW_RANDOM]["distinct_share"] == pytest.approx(1.0)  # 64 random bits
    for row in (ROW_FLOAT, ROW_STORED_FLOATS):  # no codes of their own
        assert "distinct_share" not in res.rows[row]

    lines = format_table([res]).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[2:4] == ["mAP", "distinct share"]
    cells = {
        r.split("|")[2].strip(): [c.strip() for c in r.strip("|").split("|")] for r in lines[2:]
    }
    assert cells[ROW_HASH][3] == "0.0368 (11)"
    assert cells[ROW_FLOAT][3] == "–"
    assert cells[ROW_RANDOM][3] == "1.0000 (299)"
