"""The evaluation run: chunking, baselines, and that learned-like codes beat random ones."""

import numpy as np

from cxrhash.encode import Encoded
from cxrhash.evaluation.baselines import lsh_codes, random_codes
from cxrhash.evaluation.evaluate import (
    ROW_FLOAT,
    ROW_HASH,
    ROW_LSH,
    ROW_RANDOM,
    code_metrics,
    evaluate_encoded,
    format_table,
)
from cxrhash.evaluation.metrics import retrieval_metrics
from cxrhash.index.codes import hamming_rank


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
    assert set(res.rows) == {ROW_HASH, ROW_FLOAT, ROW_LSH, ROW_RANDOM}
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
