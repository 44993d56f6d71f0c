"""HashIndex's opt-in float store and two-stage search: format, checks, crash safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import cxrhash
from cxrhash.index.codes import pack_codes
from cxrhash.index.rerank import two_stage_rank
from cxrhash.index.store import (
    HashIndex,
    HashIndexError,
    IndexCorruptError,
    IndexMismatchError,
)

BITS = 12  # 2 bytes of code, 24 bytes of float16 per item
SRC = str(Path(cxrhash.__file__).resolve().parents[1])  # the package under test, for subprocesses


def _floats(n: int, seed: int, bits: int = BITS, n_distinct: int | None = None) -> np.ndarray:
    """n rows of float outputs; with ``n_distinct``, only that many distinct signs (ties)."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n, bits)).astype(np.float32)
    if n_distinct is not None:
        signs = np.sign(rng.standard_normal((n_distinct, bits)))
        out = np.abs(out) * signs[rng.integers(0, n_distinct, size=n)].astype(np.float32)
    return out


def _ids(start: int, n: int) -> list[str]:
    return [f"c{start + i:05d}" for i in range(n)]


def _float_index(tmp_path: Path, n: int = 50, **create: object) -> tuple[HashIndex, np.ndarray]:
    floats = _floats(n, 0, n_distinct=6)
    index = HashIndex.create(
        tmp_path / "idx", BITS, "m", store_floats=True, **create, source_names=True
    )  # type: ignore[arg-type]
    index.add(pack_codes(floats >= 0), _ids(0, n), ["x"] * n, floats=floats)
    return index, floats


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_floats_round_trip_through_the_index(tmp_path: Path) -> None:
    floats = _floats(70, 1) * 40  # up to ~150: float16 keeps 3 significant digits
    codes = pack_codes(floats >= 0)
    index = HashIndex.create(
        tmp_path / "idx", BITS, "m", shard_size=32, store_floats=True, source_names=True
    )
    index.add(codes[:45], _ids(0, 45), ["x"] * 45, floats=floats[:45])  # across a shard end
    index.add(codes[45:], _ids(45, 25), ["y"] * 25, floats=floats[45:])
    index.close()

    shards = tmp_path / "idx" / "shards"
    assert [(shards / f"000{i}.f16").stat().st_size for i in range(3)] == [
        32 * 2 * BITS,
        32 * 2 * BITS,
        6 * 2 * BITS,
    ]  # 2·k bytes per film, raw
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["format_version"] == 4  # 3 before metadata checksums
    assert manifest["floats"] == {"dtype": "float16", "row_bytes": 2 * BITS}
    assert all(isinstance(s["floats_crc32"], int) for s in manifest["shards"])

    reopened = HashIndex.open(tmp_path / "idx")
    assert reopened.stores_floats and reopened.floats.dtype == np.dtype("<f2")
    np.testing.assert_array_equal(reopened.floats, floats.astype(np.float16))
    np.testing.assert_allclose(reopened.floats, floats, rtol=1e-3)
    raw = np.frombuffer((shards / "0001.f16").read_bytes(), "<f2").reshape(-1, BITS)
    np.testing.assert_array_equal(raw, floats[32:64].astype(np.float16))  # no header
    np.testing.assert_array_equal(reopened.codes, codes)


def test_an_index_without_floats_has_no_float_files(tmp_path: Path) -> None:
    index = HashIndex.create(tmp_path / "idx", BITS, "m")
    floats = _floats(5, 2)
    index.add(pack_codes(floats >= 0), _ids(0, 5), ["x"] * 5)
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["format_version"] == 4 and "floats" not in manifest
    assert "floats_crc32" not in manifest["shards"][0]
    assert not (tmp_path / "idx" / "shards" / "0000.f16").exists()
    with pytest.raises(ValueError, match="stores no float outputs"):
        index.floats  # noqa: B018
    with pytest.raises(ValueError, match="stores no float outputs.*add the codes alone"):
        index.add(pack_codes(floats >= 0), _ids(5, 5), ["x"] * 5, floats=floats)


def test_add_checks_the_float_rows_and_writes_nothing_on_error(tmp_path: Path) -> None:
    index, _ = _float_index(tmp_path, n=10)
    new = _floats(4, 3)
    codes = pack_codes(new >= 0)
    bad_sign = new.copy()
    bad_sign[2, 5] *= -1
    overflow = new.copy()
    overflow[1, 0] = 1e6
    for floats, message in [
        (None, "stores float outputs.*pass each item's float outputs"),
        (new[:, :-1], rf"floats must be 4×{BITS}"),
        (new[:3], rf"floats must be 4×{BITS}"),
        (np.where(new >= 0, 1, -1), "must be a float array"),
        (bad_sign, "floats row 2 does not match its code"),
        (overflow, "floats row 1 is not finite in float16"),
    ]:
        with pytest.raises(ValueError, match=message):
            index.add(codes, _ids(10, 4), ["x"] * 4, floats=floats)
    assert len(index) == 10
    assert (tmp_path / "idx" / "shards" / "0000.f16").stat().st_size == 10 * 2 * BITS


def test_open_or_create_checks_the_float_store(tmp_path: Path) -> None:
    _float_index(tmp_path)[0].close()
    with pytest.raises(IndexMismatchError, match="stores float outputs.*--store-floats"):
        HashIndex.open_or_create(tmp_path / "idx", BITS, "m", store_floats=False, source_names=True)
    HashIndex.open_or_create(
        tmp_path / "idx", BITS, "m", store_floats=True, source_names=True
    ).close()
    assert HashIndex.open_or_create(tmp_path / "idx", BITS, "m", source_names=True).stores_floats
    HashIndex.create(tmp_path / "plain", BITS, "m", source_names=True).close()
    with pytest.raises(IndexMismatchError, match="stores no float outputs.*new directory"):
        HashIndex.open_or_create(
            tmp_path / "plain", BITS, "m", store_floats=True, source_names=True
        )


@pytest.mark.parametrize("rerank", ["asymmetric", "floats"])
@pytest.mark.parametrize("backend", ["flat", "distinct"])
def test_reranked_search_equals_the_two_stage_ranking(
    tmp_path: Path, rerank: str, backend: str
) -> None:
    floats = _floats(300, 4, n_distinct=12)  # a collapsed database: ties everywhere
    codes = pack_codes(floats >= 0)
    index = HashIndex.create(
        tmp_path / "idx",
        BITS,
        "m",
        backend=backend,
        shard_size=128,
        store_floats=True,
        source_names=True,
    )
    index.add(codes[:200], _ids(0, 200), ["x"] * 200, floats=floats[:200])
    index.add(codes[200:], _ids(200, 100), ["y"] * 100, floats=floats[200:])
    q_floats = _floats(20, 5)
    q_codes = pack_codes(q_floats >= 0)
    order, dist = two_stage_rank(
        q_codes,
        q_floats,
        codes,
        BITS,
        mode=rerank,  # type: ignore[arg-type]
        shortlist=60,
        db_floats=floats.astype(np.float16),
    )
    rows, dists, scores = index.search_reranked(q_codes, q_floats, 10, rerank=rerank, shortlist=60)
    np.testing.assert_array_equal(rows, order[:, :10])
    np.testing.assert_array_equal(dists, dist[:, :10])
    assert (np.diff(scores, axis=1) <= 0).all()  # best score first

    hits = index.search(q_codes, 10, rerank=rerank, shortlist=60, query_floats=q_floats)
    assert [[h.row for h in q] for q in hits] == rows.tolist()
    assert [h.case_id for h in hits[3]] == [f"c{r:05d}" for r in rows[3]]
    assert [h.score for h in hits[0]] == pytest.approx(scores[0].tolist())
    assert [h.distance for h in hits[0]] == dists[0].tolist()
    plain = index.search(q_codes, 10)
    assert plain[0][0].score is None
    assert [[h.row for h in q] for q in plain] != rows.tolist()  # the re-rank changed the order

    index.remove([f"c{r:05d}" for r in np.unique(rows[:, 0])])  # never to come back
    again, _, _ = index.search_reranked(q_codes, q_floats, 10, rerank=rerank, shortlist=60)
    assert not np.isin(again, rows[:, 0]).any()


def test_rerank_errors_name_the_missing_piece(tmp_path: Path) -> None:
    plain = HashIndex.create(tmp_path / "plain", BITS, "m", source_names=True)
    floats = _floats(30, 6)
    plain.add(pack_codes(floats >= 0), _ids(0, 30), ["x"] * 30)
    q = pack_codes(floats[:2] >= 0)
    with pytest.raises(HashIndexError, match="stores no float outputs.*--store-floats"):
        plain.search(q, 5, rerank="floats", query_floats=floats[:2])
    with pytest.raises(ValueError, match="needs the queries' float outputs"):
        plain.search(q, 5, rerank="asymmetric")
    with pytest.raises(ValueError, match=rf"2×{BITS}"):
        plain.search(q, 5, rerank="asymmetric", query_floats=floats[:1])
    with pytest.raises(ValueError, match="at least the k = 5"):
        plain.search(q, 5, rerank="asymmetric", shortlist=4, query_floats=floats[:2])
    with pytest.raises(ValueError, match="unknown re-rank mode 'cosine'"):
        plain.search(q, 5, rerank="cosine", query_floats=floats[:2])
    hits = plain.search(q, 50, rerank="asymmetric", query_floats=floats[:2])
    assert len(hits[0]) == 30  # k beyond the index: every item, re-ranked


def test_damaged_float_files_are_reported(tmp_path: Path) -> None:
    index, _ = _float_index(tmp_path, n=30, shard_size=12)
    index.close()
    f16 = tmp_path / "idx" / "shards" / "0001.f16"
    data = bytearray(f16.read_bytes())
    data[7] ^= 0x01
    f16.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=r"0001\.f16: the 12 committed float rows fail"):
        HashIndex.open(tmp_path / "idx")
    f16.write_bytes(bytes(data[:-1]))
    with pytest.raises(IndexCorruptError, match=r"0001\.f16 is truncated"):
        HashIndex.open(tmp_path / "idx")
    f16.unlink()
    with pytest.raises(IndexCorruptError, match=r"0001\.f16 is missing"):
        HashIndex.open(tmp_path / "idx")


@pytest.mark.parametrize("step", ["_insert_rows", "_commit"])
def test_process_exiting_between_steps_leaves_floats_at_the_committed_count(
    tmp_path: Path, step: str
) -> None:
    index, floats = _float_index(tmp_path, n=20, shard_size=21)
    index.close()
    script = textwrap.dedent(
        f"""
        import os, sys
        import numpy as np
        from cxrhash.index.codes import pack_codes
        from cxrhash.index.store import HashIndex
        from cxrhash.index.writing import IndexWriter
        IndexWriter.{step} = lambda self, *args: os._exit(3)
        index = HashIndex.open(sys.argv[1])
        late = np.full((5, {BITS}), -2.0, np.float32)
        index.add(pack_codes(late >= 0), [f"late-{{i}}" for i in range(5)], ["x"] * 5, floats=late)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "idx")],
        capture_output=True,
        timeout=120,
        env=_env(),
    )
    assert done.returncode == 3, done.stderr.decode()
    shards = tmp_path / "idx" / "shards"
    assert (shards / "0000.f16").stat().st_size == 21 * 2 * BITS  # staged past the 20 rows
    assert (shards / "0001.f16").stat().st_size == 4 * 2 * BITS
    index = HashIndex.open(tmp_path / "idx")
    assert len(index) == 20
    np.testing.assert_array_equal(index.floats, floats.astype(np.float16))
    new = np.full((5, BITS), 3.0, np.float32)
    index.add(pack_codes(new >= 0), [f"late-{i}" for i in range(5)], ["y"] * 5, floats=new)
    index.close()
    again = HashIndex.open(tmp_path / "idx")  # verifies both CRCs
    np.testing.assert_array_equal(again.floats[20:], new.astype(np.float16))
    np.testing.assert_array_equal(again.floats[:20], floats.astype(np.float16))


_KILL_BATCHES, _KILL_BATCH = 400, 5_000  # far more than can finish before the kill


def _kill_floats(b: int) -> np.ndarray:
    return np.random.default_rng(1000 + b).standard_normal((_KILL_BATCH, 64)).astype(np.float32)


def test_sigkill_mid_add_leaves_floats_consistent_with_the_committed_count(
    tmp_path: Path,
    kill_writer: Callable[[str, Path], None],
) -> None:
    path = tmp_path / "idx"
    HashIndex.create(path, 64, "m", shard_size=12_500, store_floats=True, source_names=True).close()
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from cxrhash.index.codes import pack_codes
        from cxrhash.index.store import HashIndex
        index = HashIndex.open(sys.argv[1])
        for b in range({_KILL_BATCHES}):
            floats = np.random.default_rng(1000 + b).standard_normal(({_KILL_BATCH}, 64))
            floats = floats.astype(np.float32)
            ids = [f"k{{b}}-{{i}}" for i in range({_KILL_BATCH})]
            index.add(pack_codes(floats >= 0), ids, ["f"] * {_KILL_BATCH}, floats=floats)
        """
    )
    kill_writer(script, path)

    index = HashIndex.open(path)  # checks the codes' and the floats' CRC-32
    count = len(index)
    n_done = count // _KILL_BATCH
    assert count == n_done * _KILL_BATCH and 1 <= n_done < _KILL_BATCHES
    on_disk = sum(f.stat().st_size for f in (path / "shards").glob("*.f16")) // 128
    print(f"killed after {n_done} of {_KILL_BATCHES} batches, {on_disk - count} float rows past")
    expected = np.concatenate([_kill_floats(b) for b in range(n_done)])
    np.testing.assert_array_equal(index.floats, expected.astype(np.float16))
    np.testing.assert_array_equal(index.codes, pack_codes(expected >= 0))
    q = expected[::997]
    rows, _, scores = index.search_reranked(pack_codes(q >= 0), q, 1, rerank="floats")
    assert rows[:, 0].tolist() == list(range(0, count, 997))  # each finds itself, cosine ≈ 1
    assert scores.min() > 0.999

    late = _kill_floats(n_done)
    index.add(
        pack_codes(late >= 0),
        [f"k{n_done}-{i}" for i in range(_KILL_BATCH)],
        ["g"] * _KILL_BATCH,
        floats=late,
    )
    index.close()
    grown = HashIndex.open(path)
    np.testing.assert_array_equal(grown.floats[count:], late.astype(np.float16))
