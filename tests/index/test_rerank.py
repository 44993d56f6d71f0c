"""Two-stage search: a Hamming shortlist re-ranked by the query's float outputs."""

from __future__ import annotations

import numpy as np
import pytest

from cxrhash.index.codes import hamming_rank, pack_codes
from cxrhash.index.rerank import (
    asymmetric_scores,
    check_query_floats,
    cosine_scores,
    default_shortlist,
    rerank_shortlist,
    shortlist_length,
    two_stage_rank,
)

BITS = 12  # not a multiple of 8: the padding bits must not count


def _loop_score(qf: np.ndarray, bits: np.ndarray, floats: np.ndarray | None) -> float:
    """One item's re-rank score from plain Python arithmetic."""
    if floats is None:  # asymmetric: <f_q, b_i> with b in {-1, +1}
        return sum(float(f) * (1.0 if b else -1.0) for f, b in zip(qf, bits, strict=True))
    v = [float(x) for x in floats]
    nq = sum(float(f) ** 2 for f in qf) ** 0.5
    nv = sum(x * x for x in v) ** 0.5
    dot = sum(float(f) * x for f, x in zip(qf, v, strict=True))
    return 0.0 if nq == 0 or nv == 0 else dot / (nq * nv)


def _loop_two_stage(
    q_bits: np.ndarray,
    q_floats: np.ndarray,
    db_bits: np.ndarray,
    db_floats: np.ndarray | None,
    shortlist: int,
) -> list[list[int]]:
    """The two-stage ranking recomputed item by item: Hamming (ties by id), then the first
    ``shortlist`` by (−score, Hamming, id), the rest as they were."""
    out = []
    for qb, qf in zip(q_bits, q_floats, strict=True):
        key = {}
        for i, db in enumerate(db_bits):
            dist = sum(int(a != b) for a, b in zip(qb, db, strict=True))
            floats = None if db_floats is None else db_floats[i]
            key[i] = (dist, -_loop_score(qf, db, floats), i)
        hamming = sorted(key, key=lambda i: (key[i][0], i))
        head = sorted(hamming[:shortlist], key=lambda i: (key[i][1], key[i][0], i))
        out.append(head + hamming[shortlist:])
    return out


def _collapsed(rng: np.random.Generator, n: int, n_distinct: int) -> np.ndarray:
    """n codes drawn from n_distinct distinct ones: a collapsed model's database."""
    distinct = rng.integers(0, 2, size=(n_distinct, BITS))
    return distinct[rng.integers(0, n_distinct, size=n)]


@pytest.mark.parametrize("mode", ["asymmetric", "floats"])
@pytest.mark.parametrize("shortlist", [1, 25, 500])
def test_two_stage_rank_equals_a_loop_recomputation(mode: str, shortlist: int) -> None:
    rng = np.random.default_rng(shortlist)
    db_bits = _collapsed(rng, 120, 15)  # many Hamming ties and equal codes
    q_bits = rng.integers(0, 2, size=(9, BITS))
    # multiples of 1/8: float32 sums are exact, so equal scores are real ties
    q_floats = (rng.integers(1, 40, size=q_bits.shape) / 8 * (2 * q_bits - 1)).astype(np.float32)
    q_floats[0] = 0.0  # a zero query: every score ties, Hamming order must stay
    db_floats = None
    if mode == "floats":
        mags = rng.integers(1, 40, size=db_bits.shape) / 8
        db_floats = (mags * (2 * db_bits - 1)).astype(np.float16)
        db_floats[::7] = db_floats[3]  # some equal stored rows
    order, dist = two_stage_rank(
        pack_codes(q_bits),
        q_floats,
        pack_codes(db_bits),
        BITS,
        mode=mode,  # type: ignore[arg-type]
        shortlist=shortlist,
        db_floats=db_floats,
    )
    want = _loop_two_stage(q_bits, q_floats, db_bits, db_floats, shortlist)
    assert order.tolist() == want
    full = hamming_rank(pack_codes(q_bits), pack_codes(db_bits), None)[1]
    np.testing.assert_array_equal(np.sort(dist, axis=1), full)  # distances travel with rows
    assert (
        order[0].tolist()
        == hamming_rank(pack_codes(q_bits[:1]), pack_codes(db_bits))[0][0].tolist()
    )


def test_asymmetric_rerank_orders_tied_codes_of_a_collapsed_database_by_float_score() -> None:
    # query code: all +1. Two distinct database codes at Hamming distance 1, each
    # repeated: "weak" flips bit 0, where the query's output is 0.1 (uncertain);
    # "strong" flips bit 5, where it is 3.0. <f, b> = sum|f| - 2|f_j|: weak wins.
    q_floats = np.full((1, BITS), 1.0, np.float32)
    q_floats[0, 0], q_floats[0, 5] = 0.1, 3.0
    q_bits = np.ones((1, BITS), int)
    strong, weak = q_bits[0].copy(), q_bits[0].copy()
    strong[5], weak[0] = 0, 0
    far = np.zeros(BITS, int)  # distance 12: stays last whatever the score
    db_bits = np.array([strong] * 30 + [far] * 5 + [weak] * 30)  # database order: strong first
    q, db = pack_codes(q_bits), pack_codes(db_bits)

    hamming = hamming_rank(q, db)[0][0]
    assert hamming[:30].tolist() == list(range(30))  # Hamming alone: database order

    order, dist = two_stage_rank(q, q_floats, db, BITS, mode="asymmetric", shortlist=60)
    weak_ids, strong_ids = list(range(35, 65)), list(range(30))
    assert order[0].tolist() == weak_ids + strong_ids + list(range(30, 35))
    assert dist[0, :60].tolist() == [1] * 60  # equal codes kept in id order above

    scores = asymmetric_scores(q_floats, db[None, [35, 0]], BITS)
    np.testing.assert_allclose(scores, [[q_floats.sum() - 0.2, q_floats.sum() - 6.0]], rtol=1e-6)


def test_stored_floats_separate_equal_codes() -> None:
    db_bits = np.ones((4, BITS), int)  # one code for every film
    db_floats = np.ones((4, BITS), np.float16)
    db_floats[2, :6] = 4.0  # film 2's outputs point where the query's do
    q_floats = np.ones((1, BITS), np.float32)
    q_floats[0, :6] = 4.0
    order, _ = two_stage_rank(
        pack_codes(np.ones((1, BITS), int)),
        q_floats,
        pack_codes(db_bits),
        BITS,
        mode="floats",
        shortlist=4,
        db_floats=db_floats,
    )
    assert order[0].tolist() == [2, 0, 1, 3]
    np.testing.assert_allclose(cosine_scores(q_floats, db_floats[None, [2, 0]])[0, 0], 1.0, 1e-6)
    with pytest.raises(ValueError, match="database's float outputs"):
        two_stage_rank(
            pack_codes(np.ones((1, BITS), int)),
            q_floats,
            pack_codes(db_bits),
            BITS,
            mode="floats",
            shortlist=4,
        )


def test_rerank_keeps_padding_last_and_breaks_ties_by_distance_then_id() -> None:
    rows = np.array([[4, -1, 7, 2, 9]])
    dist = np.array([[1, -1, 0, 1, 1]], np.int32)
    scores = np.array([[0.5, 9.0, 0.5, 0.5, 0.7]], np.float32)
    r, d, s = rerank_shortlist(rows, dist, scores)
    assert r.tolist() == [[9, 7, 2, 4, -1]]
    assert d.tolist() == [[1, 0, 1, 1, -1]] and s[0, 0] == np.float32(0.7)


def test_shortlist_and_query_float_checks() -> None:
    assert default_shortlist(5) == 100 and default_shortlist(50) == 500
    assert shortlist_length(10, None) == 100 and shortlist_length(10, 10) == 10
    with pytest.raises(ValueError, match="at least the k = 10"):
        shortlist_length(10, 9)
    with pytest.raises(ValueError, match="needs the queries' float outputs"):
        check_query_floats(None, 2, BITS)
    with pytest.raises(ValueError, match=rf"2×{BITS}"):
        check_query_floats(np.zeros((2, BITS + 1)), 2, BITS)
    with pytest.raises(ValueError, match="NaN"):
        check_query_floats(np.full((1, BITS), np.nan), 1, BITS)
    assert check_query_floats(np.zeros(BITS), 1, BITS).shape == (1, BITS)
