"""Tests for cxrhash.index.codes: packing and the numpy Hamming reference."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from cxrhash.index.codes import (
    AmbiguousCodesError,
    as_packed_codes,
    distinct_count,
    hamming_distances,
    hamming_rank,
    pack_codes,
    unpack_codes,
)


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


def test_packed_codes_with_bytes_of_only_0_and_1_stay_packed() -> None:
    # 16-bit codes whose only set bits are the last of each byte: every byte is 0 or 1
    bits = np.zeros((5, 16), dtype=bool)
    bits[:, 7] = [1, 0, 1, 1, 0]
    bits[:, 15] = [0, 0, 1, 0, 1]
    packed = pack_codes(bits)
    assert packed.max() == 1
    codes, k = as_packed_codes(packed, 16)
    assert k == 16 and np.array_equal(codes, packed)
    with pytest.raises(AmbiguousCodesError, match="give the code length"):
        as_packed_codes(packed)  # 2 columns: 2 unpacked bits or 16 packed ones
    # the same values declared as 2 unpacked bits
    codes, k = as_packed_codes(packed, 2)
    assert k == 2 and np.array_equal(unpack_codes(codes, 2), packed)


def test_layout_follows_dtype_and_declared_length() -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (6, 12)).astype(bool)
    packed = pack_codes(bits)
    for unpacked in (bits, bits.astype(np.int64), 2 * bits.astype(np.int8) - 1, bits * 1.0):
        codes, k = as_packed_codes(unpacked)
        assert k == 12 and np.array_equal(codes, packed), unpacked.dtype
    assert as_packed_codes(bits.astype(np.uint8), 12)[1] == 12  # uint8 0/1 + k = columns
    wide = pack_codes(np.ones((3, 16), dtype=bool))  # bytes 255: packed, k = 8 × columns
    assert as_packed_codes(wide)[1] == 16
    assert as_packed_codes(packed, 12)[1] == 12


def test_codes_that_fit_no_layout_are_refused_with_the_reason() -> None:
    packed = pack_codes(np.ones((3, 12), dtype=bool))
    with pytest.raises(ValueError, match="x.npy: 2 uint8 columns are neither 20 unpacked bits"):
        as_packed_codes(packed, 20, name="x.npy")
    with pytest.raises(ValueError, match="padding bits"):
        as_packed_codes(np.full((2, 2), 255, np.uint8), 12)
    with pytest.raises(ValueError, match="12 columns of unpacked int64 bits, expected 16"):
        as_packed_codes(np.ones((2, 12), np.int64), 16)
    with pytest.raises(ValueError, match="only 0/1 or −1/\\+1"):
        as_packed_codes(np.array([[0, 2], [1, 0]]))
    with pytest.raises(ValueError, match="2-D"):
        as_packed_codes(np.ones(4, np.uint8))


def test_distinct_count_counts_distinct_rows() -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(7, 12))[rng.integers(0, 7, size=300)]
    assert distinct_count(pack_codes(bits)) == len({tuple(r) for r in bits.tolist()})
    assert distinct_count(np.zeros((0, 2), np.uint8)) == 0
    with pytest.raises(ValueError, match="uint8"):
        distinct_count(bits)
