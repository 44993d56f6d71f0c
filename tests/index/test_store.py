"""Tests for cxrhash.index.store.HashIndex: sharded persistence, exact search, crash safety."""

from __future__ import annotations

import fcntl
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import subprocess_env

from cxrhash.index.backends import tie_aware_recall
from cxrhash.index.backends.synthetic import clustered_codes, uniform_codes
from cxrhash.index.codes import hamming_distances, hamming_rank, pack_codes
from cxrhash.index.meta import MetaStore
from cxrhash.index.meta_table import MetaTable
from cxrhash.index.store import (
    ConcurrentWriteError,
    DuplicateCaseIdError,
    HashIndex,
    HashIndexError,
    IndexCorruptError,
    IndexExistsError,
    IndexMismatchError,
    SearchHit,
    UnknownCaseIdError,
    merge_top_k,
)
from cxrhash.index.writing import IndexWriter

BITS = 16


def _batch(rng: np.random.Generator, start: int, n: int, distinct: np.ndarray | None = None):
    """n packed codes (drawn from ``distinct`` when given) with ids c<start>.. and metadata."""
    if distinct is None:
        bits = rng.integers(0, 2, size=(n, BITS))
    else:
        bits = distinct[rng.integers(0, len(distinct), size=n)]
    ids = [f"c{start + i:05d}" for i in range(n)]
    findings = [f"finding-{(start + i) % 3}" for i in range(n)]
    patients = [f"PATIENT-SECRET-{start + i:04d}" for i in range(n)]
    return pack_codes(bits), ids, findings, patients


def _filled(
    tmp_path: Path, n: int = 40, seed: int = 0, **create: Any
) -> tuple[HashIndex, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    codes, ids, findings, patients = _batch(rng, 0, n)
    index = HashIndex.create(tmp_path / "idx", BITS, "model-a", **create, source_names=True)
    index.add(codes, ids, findings, patient_ids=patients)
    return index, codes, ids


# ----------------------------------------------------------------- basics


def test_create_add_reopen_search(tmp_path: Path) -> None:
    index, codes, ids = _filled(tmp_path)
    assert len(index) == 40 and index.bits == BITS and index.model_id == "model-a"
    assert (index.backend, index.n_shards, index.shard_size) == ("flat", 1, 1 << 22)
    index.close()
    for name in ("index.json", "shards/0000.codes", "meta.sqlite"):
        assert (tmp_path / "idx" / name).is_file()
    assert (tmp_path / "idx" / "shards" / "0000.codes").read_bytes() == codes.tobytes()

    reopened = HashIndex.open(tmp_path / "idx", model_id="model-a")
    assert len(reopened) == 40
    assert isinstance(reopened.codes, np.memmap)
    np.testing.assert_array_equal(reopened.codes, codes)
    assert reopened.contains(["c00003", "nope"]) == [True, False]
    hits = reopened.search(codes[3], k=5)
    assert len(hits) == 1 and len(hits[0]) == 5
    assert hits[0][0] == SearchHit(
        rank=0, row=3, case_id="c00003", distance=0, findings="finding-0"
    )
    want_rows, want_d = hamming_rank(codes[3:4], codes, k=5)
    assert [h.row for h in hits[0]] == want_rows[0].tolist()
    assert [h.distance for h in hits[0]] == want_d[0].tolist()
    assert [h.case_id for h in hits[0]] == [ids[r] for r in want_rows[0]]
    assert [h.rank for h in hits[0]] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("backend", ["flat", "distinct"])
@pytest.mark.parametrize("k", [1, 10, 150, 2000, 5000])
def test_sharded_search_equals_stable_hamming_rank_with_many_ties(
    tmp_path: Path, backend: str, k: int
) -> None:
    rng = np.random.default_rng(k)
    distinct = rng.integers(0, 2, size=(20, BITS))
    codes, ids, findings, _ = _batch(rng, 0, 2000, distinct)
    index = HashIndex.create(
        tmp_path / "idx", BITS, "m", backend=backend, shard_size=600, source_names=True
    )
    index.add(codes[:1500], ids[:1500], findings[:1500])  # 3 shards, then one more
    index.add(codes[1500:], ids[1500:], findings[1500:])
    assert index.n_shards == 4
    queries = pack_codes(rng.integers(0, 2, size=(30, BITS)))
    rows, dists = index.search_packed(queries, k)
    want_rows, want_d = hamming_rank(queries, codes, k)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(dists, want_d)
    hits = index.search(queries[:2], min(k, 20))
    assert [[h.case_id for h in q] for q in hits] == [
        [ids[r] for r in row] for row in want_rows[:2, : min(k, 20)]
    ]


def test_merge_is_exact_by_distance_then_id() -> None:
    ids_a, d_a = np.array([[0, 1, 2]]), np.array([[1, 3, 3]], np.int32)
    ids_b, d_b = np.array([[10, 11, -1]]), np.array([[0, 3, -1]], np.int32)
    ids, d = merge_top_k([(ids_b, d_b), (ids_a, d_a)], 4)
    assert ids.tolist() == [[10, 0, 1, 2]] and d.tolist() == [[0, 1, 3, 3]]


def test_open_with_another_backend_for_this_session(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    codes, ids, findings, _ = _batch(rng, 0, 500, rng.integers(0, 2, size=(15, BITS)))
    index = HashIndex.create(tmp_path / "idx", BITS, "m", shard_size=200, source_names=True)
    index.add(codes, ids, findings)
    index.close()
    other = HashIndex.open(tmp_path / "idx", backend="distinct")
    assert other.backend == "distinct"
    np.testing.assert_array_equal(
        other.search_packed(codes[:25], 60)[0], hamming_rank(codes[:25], codes, 60)[0]
    )
    other.close()
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["backend"]["name"] == "flat"
    with pytest.raises(ValueError, match="milvus backend needs a uri"):
        HashIndex.open(tmp_path / "idx", backend="milvus")


@pytest.mark.parametrize(
    "backend, params",
    [
        ("hnsw", {"m": 16, "ef_search": 128, "ef_construction": 100}),
        ("ivf", {"nlist": 4, "nprobe": 2}),
        ("multihash", {"nhash": 8, "nflip": 2}),
    ],
)
def test_approximate_backends_sorted_true_distances_and_recall(
    tmp_path: Path, backend: str, params: dict[str, Any]
) -> None:
    bits = 64
    codes = clustered_codes(1800, bits, 1, n_clusters=40)
    index = HashIndex.create(
        tmp_path / "idx",
        bits,
        "m",
        backend=backend,
        backend_params=params,
        shard_size=600,
        source_names=True,
    )
    index.add(codes, [f"c{i}" for i in range(len(codes))], ["x"] * len(codes))
    queries = np.concatenate([codes[::60], clustered_codes(30, bits, 2, n_clusters=40)])
    rows, dists = index.search_packed(queries, 10)
    _, exact_d = hamming_rank(queries, codes, 10)
    recall = tie_aware_recall(dists, exact_d, 10)
    print(f"{backend} tie-aware recall@10 over 3 shards: {recall:.3f}")
    assert recall >= 0.9
    for q, r, d in zip(queries, rows, dists, strict=True):
        real = r >= 0
        assert np.all(real[:-1] >= real[1:]), "padding must come last"
        np.testing.assert_array_equal(d[real], hamming_distances(q, codes[r[real]])[0])
        np.testing.assert_array_equal(np.lexsort((r[real], d[real])), np.arange(real.sum()))


def test_batches_across_shard_boundaries_equal_one_batch(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    codes, ids, findings, patients = _batch(rng, 0, 60)
    one = HashIndex.create(tmp_path / "one", BITS, "m", shard_size=7, source_names=True)
    one.add(codes, ids, findings, patients)
    many = HashIndex.create(tmp_path / "many", BITS, "m", shard_size=7, source_names=True)
    for s, e in [(0, 3), (3, 7), (7, 25), (25, 26), (26, 60)]:
        many.add(codes[s:e], ids[s:e], findings[s:e], patients[s:e])
    queries = codes[::7]
    assert one.search(queries, 12) == many.search(queries, 12)
    assert list(one.iter_metadata()) == list(many.iter_metadata())
    np.testing.assert_array_equal(many.codes, codes)
    one.close()
    many.close()
    files = sorted(p.name for p in (tmp_path / "many" / "shards").iterdir())
    assert files == [f"{i:04d}.codes" for i in range(9)]
    for name in files:
        i = int(name[:4])
        data = (tmp_path / "many" / "shards" / name).read_bytes()
        assert data == codes[7 * i : 7 * i + 7].tobytes()
        assert data == (tmp_path / "one" / "shards" / name).read_bytes()


def test_duplicate_case_ids_rejected(tmp_path: Path) -> None:
    index, codes, _ = _filled(tmp_path, n=10)
    with pytest.raises(DuplicateCaseIdError, match="'c00002'"):
        index.add(codes[:2], ["c00002", "new"], ["a", "b"])
    with pytest.raises(DuplicateCaseIdError, match="more than once.*'x'"):
        index.add(codes[:2], ["x", "x"], ["a", "b"])
    assert len(index) == 10 and index.contains(["new"]) == [False]


def test_wrong_code_length_rejected(tmp_path: Path) -> None:
    index, _, _ = _filled(tmp_path, n=4)
    wide = pack_codes(np.ones((2, 32), dtype=bool))
    with pytest.raises(ValueError, match=r"4 bytes \(32 bits\).*expects 2 bytes.*16 bits"):
        index.add(wide, ["a", "b"], ["", ""])
    unpacked = np.ones((2, BITS), dtype=np.uint8)
    with pytest.raises(ValueError, match="16 bytes"):
        index.search_packed(unpacked, 3)
    with pytest.raises(ValueError, match="findings has 1 entries but packed_codes has 2 rows"):
        index.add(pack_codes(np.ones((2, BITS))), ["a", "b"], ["only one"])
    assert len(index) == 4
    assert (tmp_path / "idx" / "shards" / "0000.codes").stat().st_size == 4 * 2


def test_padding_bits_must_be_zero(tmp_path: Path) -> None:
    index = HashIndex.create(tmp_path / "idx", 12, "m", source_names=True)
    with pytest.raises(ValueError, match="row 1.*padding bits"):
        index.add(np.array([[0, 0], [0, 1]], np.uint8), ["a", "b"], ["", ""])


def test_bad_create_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shard_size"):
        HashIndex.create(tmp_path / "a", BITS, "m", shard_size=0, source_names=True)
    with pytest.raises(ValueError, match="'nope' cannot serve"):
        HashIndex.create(tmp_path / "b", BITS, "m", backend="nope", source_names=True)
    with pytest.raises(ValueError, match="bad parameters for the hnsw backend"):
        HashIndex.create(
            tmp_path / "c", BITS, "m", backend="hnsw", backend_params={"mm": 3}, source_names=True
        )
    assert not any((tmp_path / d).exists() for d in "abc")


def test_model_bits_backend_and_shard_size_mismatch(tmp_path: Path) -> None:
    index, _, _ = _filled(tmp_path, n=3, shard_size=100)
    index.close()
    with pytest.raises(IndexMismatchError, match="'model-a'.*'model-b'"):
        HashIndex.open(tmp_path / "idx", model_id="model-b")
    with pytest.raises(IndexMismatchError, match="16-bit.*32 bits"):
        HashIndex.open_or_create(tmp_path / "idx", 32, "model-a", source_names=True)
    with pytest.raises(IndexMismatchError, match="'flat' backend, not 'distinct'"):
        HashIndex.open_or_create(
            tmp_path / "idx", BITS, "model-a", backend="distinct", source_names=True
        )
    with pytest.raises(IndexMismatchError, match="shards of 100 codes, not 50"):
        HashIndex.open_or_create(
            tmp_path / "idx", BITS, "model-a", shard_size=50, source_names=True
        )
    again = HashIndex.open_or_create(
        tmp_path / "idx", BITS, "model-a", backend="flat", source_names=True
    )
    assert len(again) == 3
    fresh = HashIndex.open_or_create(
        tmp_path / "new", 64, "model-c", backend="distinct", source_names=True
    )
    assert len(fresh) == 0 and fresh.bits == 64 and fresh.backend == "distinct"


def test_create_refuses_a_file_a_foreign_folder_and_an_index_with_a_clear_error(
    tmp_path: Path,
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("x")
    with pytest.raises(
        IndexExistsError,
        match=r"busy: the folder is not empty \('notes.txt'\) and holds no index.json, so it "
        "is not a cxrhash index; choose a new or empty folder",
    ):
        HashIndex.create(busy, BITS, "m")
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]  # nothing left in their folder
    with pytest.raises(FileNotFoundError, match="index.json"):
        HashIndex.open(busy)
    (tmp_path / "film.png").write_bytes(b"x")
    for target in (tmp_path / "film.png", tmp_path / "film.png" / "idx"):
        with pytest.raises(HashIndexError, match="it is a file, not a folder|cannot create the"):
            HashIndex.create(target, BITS, "m")
    _filled(tmp_path)[0].close()
    with pytest.raises(IndexExistsError, match="there is already a hash index at .*idx; open"):
        HashIndex.create(tmp_path / "idx", BITS, "m")
    assert len(HashIndex.open(tmp_path / "idx")) == 40  # untouched
    (tmp_path / "empty").mkdir()
    assert len(HashIndex.create(tmp_path / "empty", BITS, "m")) == 0


def test_create_killed_before_its_manifest_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from cxrhash.index.store import HashIndex, ShardStore
        ShardStore.create = lambda *args: os._exit(3)  # after meta.sqlite, before index.json
        HashIndex.create(sys.argv[1], 16, "m")
        """
    )
    path = tmp_path / "idx"
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, env=subprocess_env()
    )
    assert done.returncode == 3, done.stderr.decode()
    assert sorted(p.name for p in path.iterdir()) == ["meta.sqlite", "write.lock"]
    with pytest.raises(FileNotFoundError):
        HashIndex.open(path)
    index = HashIndex.create(path, BITS, "m")
    index.add(pack_codes(np.ones((2, BITS))), ["a", "b"], ["x", "y"])
    assert len(HashIndex.open(path)) == 2


_RACE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from cxrhash.index.store import HashIndex, HashIndexError
    path, me, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    go = path.parent / "go"
    (path.parent / f"ready-{me}").touch()
    while not go.exists():
        time.sleep(0.0005)
    try:
        if mode == "create":
            HashIndex.create(path, 16, "m", source_names=True).close()
        else:
            with HashIndex.open_or_create(path, 16, "m", source_names=True) as index:
                codes = np.full((3, 2), me, np.uint8)
                index.add(codes, [f"p{me}-{i}" for i in range(3)], ["x"] * 3)
        print(json.dumps({"ok": me}))
    except HashIndexError as err:
        print(json.dumps({"error": type(err).__name__, "message": str(err)}))
    """
)


@pytest.mark.parametrize("mode", ["create", "open_or_create"])
def test_processes_racing_to_create_one_index(tmp_path: Path, mode: str) -> None:
    n = 4
    for round_ in range(3):
        root = tmp_path / f"round{round_}"
        root.mkdir()
        path = root / "idx"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RACE, str(path), str(me), mode],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=subprocess_env(),
            )
            for me in range(n)
        ]
        while len(list(root.glob("ready-*"))) < n:
            assert all(p.poll() is None for p in procs)
            time.sleep(0.005)
        (root / "go").touch()
        outcomes = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0 and b"Traceback" not in err, err.decode()
            outcomes.append(json.loads(out))
        winners = [o["ok"] for o in outcomes if "ok" in o]
        for o in outcomes:
            if "error" in o:
                assert o["error"] in ("IndexExistsError", "ConcurrentWriteError"), o
                assert str(path) in o["message"]
        if mode == "create":
            assert len(winners) == 1, outcomes
        else:
            assert winners, outcomes  # the others wrote between its open and its add
        index = HashIndex.open(path)
        assert len(index) == (0 if mode == "create" else 3 * len(winners))
        assert sorted(c for _, c, _ in index.iter_metadata()) == sorted(
            f"p{me}-{i}" for me in ([] if mode == "create" else winners) for i in range(3)
        )
        assert index.verify().ok


def test_empty_index_search(tmp_path: Path) -> None:
    index = HashIndex.create(tmp_path / "idx", BITS, "m", source_names=True)
    rows, dists = index.search_packed(np.zeros((3, 2), np.uint8), 5)
    assert rows.shape == dists.shape == (3, 0)
    assert index.search(np.zeros((2, 2), np.uint8), 5) == [[], []]
    index.close()
    assert len(HashIndex.open(tmp_path / "idx")) == 0


# ----------------------------------------------------------------- removal


@pytest.mark.parametrize("backend", ["flat", "distinct"])
def test_removed_items_never_come_back(tmp_path: Path, backend: str) -> None:
    rng = np.random.default_rng(11)
    codes, ids, findings, _ = _batch(rng, 0, 300, rng.integers(0, 2, size=(12, BITS)))
    index = HashIndex.create(
        tmp_path / "idx", BITS, "m", backend=backend, shard_size=100, source_names=True
    )
    index.add(codes[:250], ids[:250], findings[:250])
    index.search_packed(codes[:1], 1)  # backends built: removal must reach them
    gone = sorted(rng.choice(250, size=60, replace=False).tolist())
    assert index.remove([ids[r] for r in gone[:30]]) == 30
    index.add(codes[250:], ids[250:], findings[250:])
    assert index.remove([ids[r] for r in gone[30:]]) == 30  # removed before the next sync
    alive = np.setdiff1d(np.arange(300), gone)
    queries = pack_codes(rng.integers(0, 2, size=(20, BITS)))

    def check(ix: HashIndex) -> None:
        assert len(ix) == 240 and ix.n_rows == 300
        rows, dists = ix.search_packed(queries, 300)
        want_pos, want_d = hamming_rank(queries, codes[alive], 240)
        np.testing.assert_array_equal(rows, alive[want_pos])
        np.testing.assert_array_equal(dists, want_d)
        assert [r for r, _, _ in ix.iter_metadata()] == alive.tolist()
        assert ix.contains([ids[gone[0]], ids[alive[0]]]) == [False, True]

    check(index)
    index.close()
    check(HashIndex.open(tmp_path / "idx"))


def test_remove_stored_takes_the_pseudonyms_a_search_answers(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    codes, ids, findings, _ = _batch(rng, 0, 10)
    index = HashIndex.create(tmp_path / "idx", BITS, "m")  # pseudonymous case ids
    index.add(codes, ids, findings)
    (hit,) = index.search(codes[3], 1)[0]
    assert hit.case_id == index.stored_case_id(ids[3]) != ids[3]
    with pytest.raises(UnknownCaseIdError):
        index.remove_stored([ids[3]])  # the source id is not what the index stores
    assert index.remove_stored([hit.case_id]) == 1
    assert index.contains([ids[3]]) == [False] and len(index) == 9
    assert hit.case_id not in {h.case_id for h in index.search(codes[3], 10)[0]}
    with pytest.raises(UnknownCaseIdError, match="removed already"):
        index.remove_stored([hit.case_id])


def test_is_current_until_another_handle_commits(tmp_path: Path) -> None:
    index, codes, ids = _filled(tmp_path, n=10)
    other = HashIndex.open(tmp_path / "idx")
    assert index.is_current() and other.is_current()
    index.add(codes[:1], ["new-1"], ["f"])  # its own commit keeps a handle current
    assert index.is_current() and not other.is_current()
    reopened = HashIndex.open(tmp_path / "idx")
    assert reopened.is_current() and len(reopened) == 11
    reopened.remove(["c00002"])
    assert not index.is_current() and len(index) == 11  # still serves its own commit
    for ix in (index, other, reopened):
        ix.close()


def test_remove_errors_and_re_adding_a_removed_case(tmp_path: Path) -> None:
    index, codes, ids = _filled(tmp_path, n=20)
    with pytest.raises(UnknownCaseIdError, match=r"2 case id\(s\).*'ghost-1', 'ghost-2'"):
        index.remove(["c00001", "ghost-1", "ghost-2"])
    assert len(index) == 20 and index.contains(["c00001"]) == [True]  # nothing removed
    with pytest.raises(DuplicateCaseIdError, match="more than once"):
        index.remove(["c00001", "c00001"])
    index.remove(["c00001"])
    with pytest.raises(UnknownCaseIdError, match="removed already"):
        index.remove(["c00001"])
    index.add(codes[1:2], ["c00001"], ["new findings"])  # the same case, re-indexed
    (hit,) = index.search(codes[1], 1)[0]
    assert (hit.row, hit.case_id, hit.findings) == (20, "c00001", "new findings")
    assert len(index) == 20 and index.n_rows == 21


# ----------------------------------------------------------------- crash safety


def _assert_previous_state(path: Path, codes: np.ndarray, ids: list[str]) -> None:
    index = HashIndex.open(path)
    assert len(index) == len(codes)
    np.testing.assert_array_equal(index.codes, codes)
    assert [row[1] for row in index.iter_metadata()] == ids
    assert index.contains(["late-0", ids[0]]) == [False, True]
    rows, _ = index.search_packed(codes, 3)
    np.testing.assert_array_equal(rows, hamming_rank(codes, codes, 3)[0])
    index.close()


def test_failed_sqlite_transaction_keeps_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, codes, ids = _filled(tmp_path, n=30, shard_size=32)
    late = pack_codes(np.zeros((4, BITS)))

    def insert_then_fail(self: MetaStore, start: int, rows: list) -> None:
        with self._conn:
            self._conn.executemany(
                "INSERT INTO items (row, case_id, findings, patient_hash, source_path) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            raise RuntimeError("simulated crash before commit")

    monkeypatch.setattr(MetaStore, "insert", insert_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        index.add(late, [f"late-{i}" for i in range(4)], ["x"] * 4)
    # the shards already hold the 4 new codes (one in a new shard); the manifest says 30
    shards = tmp_path / "idx" / "shards"
    assert (shards / "0000.codes").stat().st_size == 32 * 2
    assert (shards / "0001.codes").stat().st_size == 2 * 2
    assert len(index) == 30
    index.close()
    _assert_previous_state(tmp_path / "idx", codes, ids)


def test_failed_manifest_write_keeps_previous_state_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, codes, ids = _filled(tmp_path, n=30)
    late = pack_codes(np.ones((4, BITS)))
    late_ids = [f"late-{i}" for i in range(4)]

    def fail(self: IndexWriter, manifest: Any) -> None:
        raise RuntimeError("simulated crash before the manifest")

    monkeypatch.setattr(IndexWriter, "_commit", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        index.add(late, late_ids, ["x"] * 4)
    monkeypatch.undo()
    # the SQLite rows were committed; the same object must still ignore them and
    # accept the same batch again
    assert index.contains(late_ids) == [False] * 4
    rows, _ = index.search_packed(late[:1], 40)
    assert rows.max() < 30
    index.close()
    _assert_previous_state(tmp_path / "idx", codes, ids)
    index = HashIndex.open(tmp_path / "idx")
    index.add(late, late_ids, ["x"] * 4)
    assert len(index) == 34 and index.contains(late_ids) == [True] * 4
    assert index.search(late[0], 1)[0][0].case_id == "late-0"


@pytest.mark.parametrize("step", ["_insert_rows", "_commit"])
def test_process_exiting_between_steps(tmp_path: Path, step: str) -> None:
    index, codes, ids = _filled(tmp_path, n=20, shard_size=21)
    index.close()
    script = textwrap.dedent(
        f"""
        import os, sys
        import numpy as np
        from cxrhash.index.store import HashIndex
        from cxrhash.index.writing import IndexWriter
        IndexWriter.{step} = lambda self, *args: os._exit(3)
        index = HashIndex.open(sys.argv[1])
        index.add(np.zeros((5, 2), np.uint8), [f"late-{{i}}" for i in range(5)], ["x"] * 5)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "idx")],
        capture_output=True,
        timeout=120,
        env=subprocess_env(),
    )
    assert done.returncode == 3, done.stderr.decode()
    assert (tmp_path / "idx" / "shards" / "0001.codes").stat().st_size == 4 * 2  # staged
    _assert_previous_state(tmp_path / "idx", codes, ids)
    index = HashIndex.open(tmp_path / "idx")
    index.add(np.full((5, 2), 7, np.uint8), [f"late-{i}" for i in range(5)], ["y"] * 5)
    index.close()
    again = HashIndex.open(tmp_path / "idx")
    np.testing.assert_array_equal(again.codes[20:], np.full((5, 2), 7, np.uint8))
    assert [f for _, _, f in again.iter_metadata()][20:] == ["y"] * 5


_KILL_BATCHES, _KILL_BATCH = 20, 10_000


def _kill_codes(b: int) -> np.ndarray:
    return uniform_codes(_KILL_BATCH, 64, seed=1000 + b)


def test_sigkill_mid_add_reopens_at_a_committed_state(
    tmp_path: Path, kill_writer: Callable[[str, Path], None]
) -> None:
    path = tmp_path / "idx"
    HashIndex.create(
        path, 64, "m", shard_size=25_000, source_names=True
    ).close()  # boundaries mid-batch
    script = textwrap.dedent(
        f"""
        import sys
        from cxrhash.index.backends.synthetic import uniform_codes
        from cxrhash.index.store import HashIndex
        index = HashIndex.open(sys.argv[1])
        for b in range({_KILL_BATCHES}):
            codes = uniform_codes({_KILL_BATCH}, 64, seed=1000 + b)
            ids = [f"k{{b}}-{{i}}" for i in range({_KILL_BATCH})]
            paths = [f"/img/{{b}}/{{i}}.png" for i in range({_KILL_BATCH})]
            index.add(codes, ids, [f"f{{b}}"] * {_KILL_BATCH}, source_paths=paths)
        """
    )
    kill_writer(script, path)

    index = HashIndex.open(path)
    count = len(index)
    n_done = count // _KILL_BATCH
    assert count == n_done * _KILL_BATCH and 1 <= n_done < _KILL_BATCHES
    on_disk = sum(f.stat().st_size for f in (path / "shards").iterdir()) // 8
    print(f"killed after {n_done} of {_KILL_BATCHES} batches, {on_disk - count} rows uncommitted")
    expected = np.concatenate([_kill_codes(b) for b in range(n_done)])
    np.testing.assert_array_equal(index.codes, expected)
    meta = list(index.iter_metadata())
    assert [m[1] for m in meta] == [f"k{b}-{i}" for b in range(n_done) for i in range(_KILL_BATCH)]
    assert index.contains([f"k{n_done}-0", f"k{n_done - 1}-{_KILL_BATCH - 1}"]) == [False, True]
    sample = np.random.default_rng(0).choice(count, size=200, replace=False)
    for row, hits in zip(sample, index.search(expected[sample], 1), strict=True):
        b, i = divmod(int(row), _KILL_BATCH)
        assert hits == [SearchHit(0, int(row), f"k{b}-{i}", 0, f"f{b}", f"/img/{b}/{i}.png")]
    rows, _ = index.search_packed(_kill_codes(n_done)[:50], 5)
    assert rows.max() < count  # nothing of the interrupted batch is searchable

    index.add(_kill_codes(n_done), [f"k{n_done}-{i}" for i in range(_KILL_BATCH)], ["g"] * 10_000)
    index.close()
    grown = HashIndex.open(path)
    assert len(grown) == count + _KILL_BATCH
    np.testing.assert_array_equal(grown.codes[count:], _kill_codes(n_done))
    assert grown.search(_kill_codes(n_done)[7], 1)[0][0].case_id == f"k{n_done}-7"


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    index, codes, _ = _filled(tmp_path, n=10)
    stale = HashIndex.open(tmp_path / "idx")
    index.add(codes[:1], ["new-1"], ["x"])
    with pytest.raises(ConcurrentWriteError, match="changed by another process.*11 rows"):
        stale.add(codes[:1], ["new-2"], ["x"])
    with open(tmp_path / "idx" / "write.lock", "ab") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ConcurrentWriteError, match="another process is writing"):
            index.add(codes[:1], ["new-3"], ["x"])
    index.add(codes[:1], ["new-3"], ["x"])
    assert len(index) == 12


# ----------------------------------------------------------------- corrupt files


def test_truncated_shard_file_is_reported(tmp_path: Path) -> None:
    index, _, _ = _filled(tmp_path, n=30, shard_size=12)
    index.close()
    shard = tmp_path / "idx" / "shards" / "0001.codes"
    data = shard.read_bytes()
    shard.write_bytes(data[:-3])
    with pytest.raises(IndexCorruptError, match=r"0001\.codes is truncated: it holds 21 bytes"):
        HashIndex.open(tmp_path / "idx")
    shard.unlink()
    with pytest.raises(IndexCorruptError, match=r"0001\.codes is missing"):
        HashIndex.open(tmp_path / "idx")


def test_modified_shard_bytes_fail_the_checksum(tmp_path: Path) -> None:
    index, codes, _ = _filled(tmp_path, n=30, shard_size=12)
    index.close()
    shard = tmp_path / "idx" / "shards" / "0002.codes"
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=r"0002\.codes.*CRC-32"):
        HashIndex.open(tmp_path / "idx")
    unchecked = HashIndex.open(tmp_path / "idx", verify=False)
    assert unchecked.codes[24:].tobytes() == bytes(data)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{ truncated", "index.json is not valid JSON"),
        (b"\xff\xfe garbage", "index.json is not readable"),
        (b"[1, 2]", "does not hold a JSON object"),
        (b'{"format_version": 1}', "format-1 index"),
        (b'{"format_version": 2, "bits": 16}', "format-2 index from an older cxrhash"),
        (b'{"format_version": 4, "bits": 16}', "lacks the field"),
    ],
)
def test_garbage_manifest_is_reported(tmp_path: Path, content: bytes, message: str) -> None:
    index, _, _ = _filled(tmp_path, n=5)
    index.close()
    (tmp_path / "idx" / "index.json").write_bytes(content)
    with pytest.raises(IndexCorruptError, match=message):
        HashIndex.open(tmp_path / "idx")


def test_inconsistent_manifest_fields_are_reported(tmp_path: Path) -> None:
    index, _, _ = _filled(tmp_path, n=30, shard_size=12)
    index.close()
    manifest_path = tmp_path / "idx" / "index.json"
    good = json.loads(manifest_path.read_text())
    for change, message in [
        ({"count": 31}, "do not form the id ranges"),
        ({"shard_size": 10}, "do not form the id ranges"),
        ({"code_bytes": 3}, "16 bits need 2 bytes"),
        ({"bits": "16"}, "malformed field"),
        ({"backend": {"name": "nope", "params": {}}}, "bad search backend"),
    ]:
        manifest_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(IndexCorruptError, match=message):
            HashIndex.open(tmp_path / "idx")


def test_sqlite_problems_are_reported(tmp_path: Path) -> None:
    index, _, _ = _filled(tmp_path, n=10)
    index.close()
    meta = tmp_path / "idx" / "meta.sqlite"
    conn = sqlite3.connect(meta)
    with conn:
        conn.execute("DELETE FROM items WHERE row = 4")
    conn.close()
    with pytest.raises(
        IndexCorruptError, match="meta.sqlite holds 9 items but index.json records 10"
    ):
        HashIndex.open(tmp_path / "idx")
    meta.write_bytes(b"not a database at all" * 100)
    with pytest.raises(IndexCorruptError, match="meta.sqlite is not a readable index database"):
        HashIndex.open(tmp_path / "idx")
    meta.unlink()
    with pytest.raises(IndexCorruptError, match="meta.sqlite is missing"):
        HashIndex.open(tmp_path / "idx")


def test_ivf_shard_too_small_to_train_is_a_clear_error(tmp_path: Path) -> None:
    index = HashIndex.create(
        tmp_path / "idx", 64, "m", backend="ivf", backend_params={"nlist": 64}, source_names=True
    )
    index.add(uniform_codes(10, 64), [f"c{i}" for i in range(10)], ["x"] * 10)
    with pytest.raises(HashIndexError, match=r"ivf backend of .*0000\.codes.*nlist=64"):
        index.search_packed(uniform_codes(1, 64), 3)
    assert len(HashIndex.open(tmp_path / "idx")) == 10  # the committed data is untouched


@pytest.mark.parametrize("backend", ["distinct", "hnsw"])
def test_saved_backends_are_loaded_while_their_shard_is_unchanged(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cxrhash.index.shard_search as shard_search_mod

    rng = np.random.default_rng(8)
    codes, ids, findings, _ = _batch(rng, 0, 800, rng.integers(0, 2, size=(40, BITS)))
    index = HashIndex.create(
        tmp_path / "idx", BITS, "m", backend=backend, shard_size=300, source_names=True
    )
    index.add(codes[:700], ids[:700], findings[:700])
    saved = index.save_backends()
    assert [p.name for p in saved] == [f"{i:04d}.{backend}.npz" for i in range(3)]
    index.add(codes[700:], ids[700:], findings[700:])  # shard 2 changes: its file is stale
    index.remove([ids[5], ids[650]])
    index.close()

    built: list[str] = []
    real_create = shard_search_mod.create_backend

    def counting_create(name: str, bits: int, **params: Any):
        built.append(name)
        return real_create(name, bits, **params)

    reopened = HashIndex.open(tmp_path / "idx")
    monkeypatch.setattr(shard_search_mod, "create_backend", counting_create)
    alive = np.setdiff1d(np.arange(800), [5, 650])
    rows, dists = reopened.search_packed(codes[:40], 50)
    assert built == [backend]  # shards 0 and 1 were loaded, shard 2 rebuilt
    want_pos, want_d = hamming_rank(codes[:40], codes[alive], 50)
    if backend == "distinct":
        np.testing.assert_array_equal(rows, alive[want_pos])
    assert 5 not in rows and 650 not in rows  # removals made after saving still apply
    assert tie_aware_recall(dists, want_d, 50) >= 0.9
    reopened.close()

    sidecar = tmp_path / "idx" / "shards" / f"0000.{backend}.json"
    sidecar.write_text(sidecar.read_text().replace('"rows": 300', '"rows": 299'))
    again = HashIndex.open(tmp_path / "idx")
    built.clear()
    again.search_packed(codes[:1], 5)
    assert built == [backend, backend]  # the mismatched sidecar makes shard 0 rebuild


def test_metadata_cache_serves_rewritten_rows_and_stays_bounded(tmp_path: Path) -> None:
    meta = MetaStore.create(tmp_path / "meta.sqlite")
    meta.cache_rows, meta.memory_rows = 4, 0  # the SQLite path with a tiny cache
    meta.insert(0, [(i, f"a{i}", "No Finding", None, None) for i in range(10)])
    everything = meta.lookup(np.arange(10), 10)  # more than the cache holds: read, not cached
    assert [m[0] for m in everything] == [f"a{i}" for i in range(10)] and not meta._cache
    assert (
        meta.lookup(np.array([1, 2, 2]), 10)
        == [("a1", "No Finding", None)] + [("a2", "No Finding", None)] * 2
    )
    assert [m[0] for m in meta.lookup(np.array([9, 2, 8, 7]), 10)] == ["a9", "a2", "a8", "a7"]
    assert len(meta._cache) <= 4
    # An interrupted add left rows 7.. that the next add rewrites: the cache must follow.
    meta.insert(7, [(i, f"b{i}", "Mass", None, f"/img/{i}.png") for i in range(7, 10)])
    assert meta.lookup(np.array([8]), 10) == [("b8", "Mass", "/img/8.png")]
    meta.close()


def test_in_memory_metadata_follows_commits_and_rewrites(tmp_path: Path) -> None:
    meta = MetaStore.create(tmp_path / "meta.sqlite")
    meta.insert(0, [(i, f"a{i}", "No Finding", None, f"/a/{i}.png") for i in range(10)])
    assert meta.lookup(np.array([3, 9, 3]), 10) == [
        ("a3", "No Finding", "/a/3.png"),
        ("a9", "No Finding", "/a/9.png"),
        ("a3", "No Finding", "/a/3.png"),
    ]
    assert meta._table is not None and len(meta._table) == 10
    # rows past the committed count are not loaded, and come in when committed
    meta.insert(10, [(i, f"c{i}", "Mass|Nodule", None, None) for i in range(10, 14)])
    meta.lookup(np.array([0]), 12)
    assert len(meta._table) == 12
    assert meta.lookup(np.array([13]), 14) == [("c13", "Mass|Nodule", None)]
    # an interrupted add's rows rewritten by the next add
    meta.insert(12, [(12, "d12", "Effusion", None, "/d.dcm")])
    assert meta.lookup(np.array([12]), 13) == [("d12", "Effusion", "/d.dcm")]
    assert len(meta._table) == 13
    # above memory_rows: SQLite, same answers
    meta.memory_rows = 5
    assert meta.lookup(np.array([12, 3]), 13) == [
        ("d12", "Effusion", "/d.dcm"),
        ("a3", "No Finding", "/a/3.png"),
    ]
    assert meta._table is None
    meta.close()


def test_metadata_with_the_table_separator_is_served_from_sqlite(tmp_path: Path) -> None:
    index = HashIndex.create(tmp_path / "idx", 16, "m", source_names=True)
    codes = uniform_codes(6, 16, seed=0)
    index.add(codes, [f"odd\x1fid{i}" for i in range(6)], ["No Finding"] * 6)
    hits = index.search(codes[:2], 1)
    assert [h[0].case_id for h in hits] == ["odd\x1fid0", "odd\x1fid1"]
    index.close()


def test_meta_table_round_trip_and_truncate() -> None:
    table = MetaTable()
    table.append([("x", "No Finding", None), ("ü-ß", "Mass|Effusion", "/p/ä.png")])
    table.append([])
    assert len(table) == 2 and table.nbytes > 0
    assert table[1] == ("ü-ß", "Mass|Effusion", "/p/ä.png") and table[0][2] is None
    assert table.records(np.array([1, 0, 1])) == [table[1], table[0], table[1]]
    table.truncate(1)
    table.append([("y", "", "")])
    assert table[1] == ("y", "", "") and len(table) == 2
    with pytest.raises(KeyError):
        table[2]
    with pytest.raises(ValueError, match="separator"):
        table.append([("a\x1fb", "No Finding", None)])


@pytest.mark.parametrize("in_memory", [True, False])
def test_every_hit_carries_its_own_rows_metadata(tmp_path: Path, in_memory: bool) -> None:
    rng = np.random.default_rng(3)
    n = 500
    codes = clustered_codes(n, 32, 2, n_clusters=12)
    case_ids = [f"c{i}-" + "x" * int(rng.integers(0, 30)) for i in range(n)]
    findings = [["No Finding", "Mass|Nodule", "Effusion", "Ünusual"][i % 4] for i in range(n)]
    paths = [None if i % 5 == 0 else f"/films/{i}/" + "p" * (i % 17) + ".dcm" for i in range(n)]
    index = HashIndex.create(tmp_path / "idx", 32, "m", source_names=True)
    index.add(codes, case_ids, findings, source_paths=paths)
    if not in_memory:
        index._meta.memory_rows = 0
    hits = index.search(codes[::7], 60)
    for per_query in hits:
        assert [h.rank for h in per_query] == list(range(60))
        for h in per_query:
            assert (h.case_id, h.findings, h.source_path) == (
                case_ids[h.row],
                findings[h.row],
                paths[h.row],
            )
    assert (index._meta._table is not None) == in_memory
    index.close()
