"""ShardStore on its own: staging, committing, reading back, checksums; and its durable writes."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cxrhash.index.durable import write_at, write_json_atomic
from cxrhash.index.errors import IndexCorruptError
from cxrhash.index.integrity import MetaSeal
from cxrhash.index.manifest import Manifest, read_manifest, shard_layout
from cxrhash.index.shards import FLOAT_DTYPE, ShardStore

BITS = 12  # 2 bytes per code, 4 padding bits


def _manifest(shard_size: int = 5, floats: bool = False) -> Manifest:
    return Manifest(
        bits=BITS,
        model_id="m",
        created="2024-01-01T00:00:00+00:00",
        key_id="k",
        shard_size=shard_size,
        backend="flat",
        backend_params={},
        meta=MetaSeal(0),
        floats=floats,
    )


def _rows(n: int, seed: int) -> np.ndarray:
    codes = np.random.default_rng(seed).integers(0, 256, size=(n, 2), dtype=np.uint8)
    codes[:, 1] &= 0xF0  # zero padding bits
    return codes


def _store(tmp_path: Path, **kw: object) -> ShardStore:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return ShardStore.create(tmp_path, _manifest(**kw))  # type: ignore[arg-type]


def _sealed(staged: Manifest) -> Manifest:
    """``staged`` with (dummy) metadata digests for its rows, as a valid index.json needs."""
    blocks = staged.meta.n_blocks(staged.count)
    return replace(staged, meta=replace(staged.meta, digests=("0" * 64,) * blocks))


def test_staged_rows_appear_only_at_commit(tmp_path: Path) -> None:
    store = _store(tmp_path)
    codes = _rows(12, 0)
    staged = store.stage(codes)
    assert store.manifest.count == 0 and len(store.all_codes()) == 0  # not yet visible
    assert read_manifest(tmp_path / "index.json").count == 0  # nor on disk
    assert [(s.file, s.rows) for s in staged.shards] == shard_layout(12, 5)
    assert (tmp_path / "shards" / "0002.codes").stat().st_size == 2 * 2  # but the bytes are there
    store.commit(_sealed(staged))
    np.testing.assert_array_equal(store.all_codes(), codes)
    np.testing.assert_array_equal(store.shard_codes(1), codes[5:10])
    reopened = ShardStore(tmp_path, read_manifest(tmp_path / "index.json"))
    np.testing.assert_array_equal(reopened.all_codes(), codes)


def test_each_shard_records_the_crc32_of_its_bytes_across_appends(tmp_path: Path) -> None:
    store = _store(tmp_path)
    codes = _rows(13, 1)
    for part in (codes[:3], codes[3:9], codes[9:]):  # appends that fill, then open shards
        store.commit(_sealed(store.stage(part)))
    for i, entry in enumerate(store.manifest.shards):
        data = (tmp_path / entry.file).read_bytes()
        assert len(data) == entry.rows * 2
        assert entry.crc32 == zlib.crc32(data) == zlib.crc32(codes[5 * i : 5 * i + entry.rows])
    store.verify()


def test_an_interrupted_append_is_ignored_then_overwritten(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.commit(_sealed(store.stage(_rows(3, 2))))
    store.stage(_rows(4, 3))  # never committed: 2 bytes past the end of shard 0, shard 1 begun
    reopened = ShardStore(tmp_path, read_manifest(tmp_path / "index.json"))
    assert reopened.manifest.count == 3 and len(reopened.all_codes()) == 3
    new = _rows(1, 4)
    reopened.commit(_sealed(reopened.stage(new)))
    assert (tmp_path / "shards" / "0000.codes").stat().st_size == 4 * 2  # cut after the new row
    np.testing.assert_array_equal(reopened.all_codes()[3], new[0])
    reopened.verify()


def test_gather_reads_any_rows_in_any_shape_and_pads_minus_one_with_zeros(tmp_path: Path) -> None:
    store = _store(tmp_path, floats=True)
    codes = _rows(11, 5)
    floats = np.random.default_rng(6).standard_normal((11, BITS)).astype(np.float32)
    store.commit(_sealed(store.stage(codes, floats)))
    rows = np.array([[10, -1, 0], [4, 5, 5]])
    got = store.gather(rows)
    assert got.shape == (2, 3, 2) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0, 1], [0, 0])
    np.testing.assert_array_equal(got[[0, 0, 1, 1, 1], [0, 2, 0, 1, 2]], codes[[10, 0, 4, 5, 5]])
    f16 = store.gather(rows, floats=True)
    assert f16.shape == (2, 3, BITS) and f16.dtype == FLOAT_DTYPE
    np.testing.assert_array_equal(f16[1, 0], floats[4].astype(FLOAT_DTYPE))
    assert not f16[0, 1].any()
    np.testing.assert_array_equal(store.all_floats(), floats.astype(FLOAT_DTYPE))


def test_float_rows_are_staged_exactly_when_the_index_stores_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly when the index stores them"):
        _store(tmp_path / "a").stage(_rows(2, 0), np.zeros((2, BITS), np.float32))
    with_floats = _store(tmp_path / "b", floats=True)
    with pytest.raises(ValueError, match="exactly when the index stores them"):
        with_floats.stage(_rows(2, 0))
    with pytest.raises(ValueError, match="stores no float outputs"):
        _store(tmp_path / "c").all_floats()


def test_a_changed_byte_is_a_problem_and_a_short_file_is_corrupt(tmp_path: Path) -> None:
    store = _store(tmp_path, floats=True)
    store.commit(_sealed(store.stage(_rows(7, 7), np.ones((7, BITS), np.float32))))
    assert store.problems() == []
    shard = tmp_path / "shards" / "0001.codes"
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    fresh = ShardStore(tmp_path, store.manifest)
    assert (
        len(fresh.problems()) == 1
        and "0001.codes: the 2 committed codes fail" in (fresh.problems()[0])
    )
    with pytest.raises(IndexCorruptError, match="0001.codes"):
        fresh.verify()
    (tmp_path / "shards" / "0000.f16").write_bytes(b"\0" * 10)
    with pytest.raises(IndexCorruptError, match=r"0000\.f16 is truncated: it holds 10 bytes"):
        ShardStore(tmp_path, store.manifest)


def test_the_removal_record_follows_the_committed_manifest(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.commit(_sealed(store.stage(_rows(9, 8))))
    assert store.removed.tolist() == []
    store.commit(replace(store.manifest, removed=((1, 3), (7, 8))))
    assert store.removed.tolist() == [1, 2, 7]
    staged = store.stage(_rows(1, 9))
    assert store.removed.tolist() == [1, 2, 7]  # staging changes nothing
    store.commit(_sealed(staged))
    assert store.removed.tolist() == [1, 2, 7] and store.manifest.count == 10
    assert ShardStore(tmp_path, read_manifest(tmp_path / "index.json")).removed.tolist() == [
        1,
        2,
        7,
    ]


def test_the_manifest_round_trips_through_json(tmp_path: Path) -> None:
    store = _store(tmp_path, shard_size=4, floats=True)
    store.commit(_sealed(store.stage(_rows(6, 10), np.ones((6, BITS), np.float32))))
    text = (tmp_path / "index.json").read_text()
    assert Manifest.from_json(json.loads(text), tmp_path) == store.manifest
    assert json.loads(text)["floats"] == {"dtype": "float16", "row_bytes": 2 * BITS}


def test_write_json_atomic_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_write_at_cuts_after_the_data_and_refuses_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_at(path, 0, np.arange(6, dtype=np.uint8))
    write_at(path, 2, np.array([9], np.uint8))
    assert path.read_bytes() == bytes([0, 1, 9])
    with pytest.raises(IndexCorruptError, match="holds 3 bytes, fewer than the 5 committed"):
        write_at(path, 5, np.array([1], np.uint8))
