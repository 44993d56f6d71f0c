"""Tests for cxrhash.index.codes: packing and the numpy Hamming reference."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from cxrhash.index.codes import hamming_distances, hamming_rank, pack_codes, unpack_codes


@pytest.mark.parametrize("bits", [12, 16, 32, 48, 64])
def test_pack_unpack_round_trip(bits: int) -> None:
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2, size=(37, bits)).astype(bool)
    packed = pack_codes(codes)
    assert packed.dtype == np.uint8
    assert packed.shape == (37, (bits + 7) // 8)
    np.testing.assert_array_equal(unpack_codes(packed, bits), codes.astype(np.uint8))


def test_pack_bit_order_and_padding() -> None:
    # bit 0 is the most significant bit of byte 0; unused low bits stay 0.
    bits = np.zeros((1, 12), dtype=bool)
    bits[0, 0] = True
    bits[0, 11] = True
    np.testing.assert_array_equal(pack_codes(bits), [[0b1000_0000, 0b0001_0000]])


def test_pack_signs_and_pm_one_integers() -> None:
    floats = np.array([[0.3, -0.2, 0.0, -1.0, 1.0, -0.0, 0.9, -0.9]])
    # x >= 0 -> 1 (sign(0) counts as +1, -0.0 >= 0 too)
    np.testing.assert_array_equal(pack_codes(floats), [[0b1010_1110]])
    ints = np.array([[1, -1, 1, -1, 1, 1, -1, -1]])
    np.testing.assert_array_equal(pack_codes(ints), [[0b1010_1100]])
    with pytest.raises(ValueError, match="0/1 or -1/\\+1"):
        pack_codes(np.array([[0, 2, 1]]))
    with pytest.raises(ValueError, match="row 0, bit 1"):
        pack_codes(np.array([[0.5, np.nan]]))


@pytest.mark.parametrize("bits", [12, 64])
def test_hamming_distances_match_bit_comparison(bits: int) -> None:
    rng = np.random.default_rng(1)
    q = rng.integers(0, 2, size=(7, bits))
    db = rng.integers(0, 2, size=(53, bits))
    expected = (q[:, None, :] != db[None, :, :]).sum(axis=2)
    got = hamming_distances(pack_codes(q), pack_codes(db))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


def test_hamming_distances_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    import cxrhash.index.codes as codes_mod

    monkeypatch.setattr(codes_mod, "_BLOCK_ELEMENTS", 40)  # forces many small blocks
    rng = np.random.default_rng(2)
    q = pack_codes(rng.integers(0, 2, size=(9, 32)))
    db = pack_codes(rng.integers(0, 2, size=(31, 32)))
    monkeypatch.undo()
    expected = hamming_distances(q, db)
    monkeypatch.setattr(codes_mod, "_BLOCK_ELEMENTS", 40)
    np.testing.assert_array_equal(hamming_distances(q, db), expected)
    idx, _ = hamming_rank(q, db, k=5)
    monkeypatch.undo()
    np.testing.assert_array_equal(idx, hamming_rank(q, db, k=5)[0])


def test_faiss_distances_agree_with_numpy() -> None:
    rng = np.random.default_rng(3)
    q = pack_codes(rng.integers(0, 2, size=(5, 48)))
    db = pack_codes(rng.integers(0, 2, size=(200, 48)))
    index = faiss.IndexBinaryFlat(48)
    index.add(db)
    dist, idx = index.search(q, 200)
    reference = hamming_distances(q, db)
    np.testing.assert_array_equal(dist, np.take_along_axis(reference, idx, axis=1))


@pytest.mark.parametrize("k", [None, 1, 7, 500])
def test_hamming_rank_is_stable_sort(k: int | None) -> None:
    rng = np.random.default_rng(4)
    distinct = rng.integers(0, 2, size=(6, 16))  # few codes -> many ties
    db = pack_codes(distinct[rng.integers(0, 6, size=300)])
    q = pack_codes(rng.integers(0, 2, size=(4, 16)))
    idx, dist = hamming_rank(q, db, k)
    full = hamming_distances(q, db)
    keep = 300 if k is None else min(k, 300)
    assert idx.shape == dist.shape == (4, keep)
    for qi in range(4):
        expected = sorted(range(300), key=lambda i: (full[qi, i], i))[:keep]
        np.testing.assert_array_equal(idx[qi], expected)
        np.testing.assert_array_equal(dist[qi], full[qi, expected])


def test_rejects_unpacked_or_mismatched_codes() -> None:
    with pytest.raises(ValueError, match="uint8"):
        hamming_distances(np.zeros((1, 2), dtype=np.int64), np.zeros((1, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="2 bytes but database codes have 4"):
        hamming_distances(np.zeros((1, 2), np.uint8), np.zeros((3, 4), np.uint8))
