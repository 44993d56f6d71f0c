"""Tests for cxrhash.index.store.HashIndex: persistence, exact search, crash safety."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cxrhash.index.codes import hamming_rank, pack_codes
from cxrhash.index.store import (
    DuplicateCaseIdError,
    HashIndex,
    IndexCorruptError,
    IndexMismatchError,
    SearchHit,
)

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


def _filled(tmp_path: Path, n: int = 40, seed: int = 0) -> tuple[HashIndex, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    codes, ids, findings, patients = _batch(rng, 0, n)
    index = HashIndex.create(tmp_path / "idx", BITS, "model-a")
    index.add(codes, ids, findings, patient_ids=patients)
    return index, codes, ids


def test_create_add_reopen_search(tmp_path: Path) -> None:
    index, codes, ids = _filled(tmp_path)
    assert len(index) == 40 and index.bits == BITS and index.model_id == "model-a"
    index.close()
    for name in ("index.json", "codes.npy", "meta.sqlite"):
        assert (tmp_path / "idx" / name).is_file()

    reopened = HashIndex.open(tmp_path / "idx", model_id="model-a")
    assert len(reopened) == 40
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


@pytest.mark.parametrize("k", [1, 10, 150, 2000, 5000])
def test_search_equals_stable_hamming_rank_with_many_ties(tmp_path: Path, k: int) -> None:
    rng = np.random.default_rng(k)
    distinct = rng.integers(0, 2, size=(20, BITS))
    codes, ids, findings, _ = _batch(rng, 0, 2000, distinct)
    index = HashIndex.create(tmp_path / "idx", BITS, "m")
    index.add(codes, ids, findings)
    queries = pack_codes(rng.integers(0, 2, size=(30, BITS)))
    rows, dists = index.search_packed(queries, k)
    want_rows, want_d = hamming_rank(queries, codes, k)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(dists, want_d)


def test_two_batches_equal_one_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cxrhash.index.store as store_mod

    monkeypatch.setattr(store_mod, "_COPY_ROWS", 7)  # rewrite codes.npy in several steps
    rng = np.random.default_rng(5)
    codes, ids, findings, patients = _batch(rng, 0, 60)
    one = HashIndex.create(tmp_path / "one", BITS, "m")
    one.add(codes, ids, findings, patients)
    two = HashIndex.create(tmp_path / "two", BITS, "m")
    two.add(codes[:25], ids[:25], findings[:25], patients[:25])
    two.add(codes[25:], ids[25:], findings[25:], patients[25:])
    queries = codes[::7]
    assert one.search(queries, 12) == two.search(queries, 12)
    assert list(one.iter_metadata()) == list(two.iter_metadata())
    one.close()
    two.close()
    assert (tmp_path / "one" / "codes.npy").read_bytes() == (
        tmp_path / "two" / "codes.npy"
    ).read_bytes()


def test_duplicate_case_ids_rejected(tmp_path: Path) -> None:
    index, codes, _ = _filled(tmp_path, n=10)
    with pytest.raises(DuplicateCaseIdError, match="'c00002'"):
        index.add(codes[:2], ["c00002", "new"], ["a", "b"])
    with pytest.raises(DuplicateCaseIdError, match="more than once.*'x'"):
        index.add(codes[:2], ["x", "x"], ["a", "b"])
    assert len(index) == 10


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


def test_padding_bits_must_be_zero(tmp_path: Path) -> None:
    index = HashIndex.create(tmp_path / "idx", 12, "m")
    with pytest.raises(ValueError, match="row 1.*padding bits"):
        index.add(np.array([[0, 0], [0, 1]], np.uint8), ["a", "b"], ["", ""])


def test_model_and_bits_mismatch(tmp_path: Path) -> None:
    index, _, _ = _filled(tmp_path, n=3)
    index.close()
    with pytest.raises(IndexMismatchError, match="'model-a'.*'model-b'"):
        HashIndex.open(tmp_path / "idx", model_id="model-b")
    with pytest.raises(IndexMismatchError, match="16-bit.*32 bits"):
        HashIndex.open_or_create(tmp_path / "idx", 32, "model-a")
    again = HashIndex.open_or_create(tmp_path / "idx", BITS, "model-a")
    assert len(again) == 3
    fresh = HashIndex.open_or_create(tmp_path / "new", 64, "model-c")
    assert len(fresh) == 0 and fresh.bits == 64


def test_create_refuses_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="non-empty directory"):
        HashIndex.create(tmp_path / "busy", BITS, "m")
    with pytest.raises(FileNotFoundError, match="index.json"):
        HashIndex.open(tmp_path / "busy")


def test_patient_ids_never_stored(tmp_path: Path) -> None:
    index, _, _ = _filled(tmp_path, n=25)
    expected_hash = index.patient_hash("PATIENT-SECRET-0007")
    index.close()
    files = [p for p in (tmp_path / "idx").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"index.json", "codes.npy", "meta.sqlite"}
    for path in files:
        assert b"PATIENT-SECRET" not in path.read_bytes(), path
    conn = sqlite3.connect(tmp_path / "idx" / "meta.sqlite")
    (stored,) = conn.execute("SELECT patient_hash FROM items WHERE case_id = 'c00007'").fetchone()
    conn.close()
    assert stored == expected_hash and len(stored) == 64
    # the salt differs per index, so the same patient gets a different pseudonym
    other = HashIndex.create(tmp_path / "other", BITS, "m")
    assert other.patient_hash("PATIENT-SECRET-0007") != expected_hash


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
    index, codes, ids = _filled(tmp_path, n=30)
    late = pack_codes(np.zeros((4, BITS)))

    def insert_then_fail(self: HashIndex, start: int, rows: list) -> None:
        with self._conn:
            self._conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", rows)
            raise RuntimeError("simulated crash before commit")

    monkeypatch.setattr(HashIndex, "_insert_rows", insert_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        index.add(late, [f"late-{i}" for i in range(4)], ["x"] * 4)
    # codes.npy already holds the 4 new codes; the manifest count still says 30
    assert np.load(tmp_path / "idx" / "codes.npy").shape[0] == 34
    assert len(index) == 30
    index.close()
    _assert_previous_state(tmp_path / "idx", codes, ids)


def test_failed_manifest_write_keeps_previous_state_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, codes, ids = _filled(tmp_path, n=30)
    late = pack_codes(np.zeros((4, BITS)))
    late_ids = [f"late-{i}" for i in range(4)]

    def fail(self: HashIndex, count: int) -> None:
        raise RuntimeError("simulated crash before the manifest")

    monkeypatch.setattr(HashIndex, "_write_manifest", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        index.add(late, late_ids, ["x"] * 4)
    monkeypatch.undo()
    # the SQLite rows were committed; the same object must still ignore them and
    # accept the same batch again
    assert index.contains(late_ids) == [False] * 4
    index.close()
    _assert_previous_state(tmp_path / "idx", codes, ids)
    index = HashIndex.open(tmp_path / "idx")
    index.add(late, late_ids, ["x"] * 4)
    assert len(index) == 34 and index.contains(late_ids) == [True] * 4


def test_killed_process_between_steps(tmp_path: Path) -> None:
    index, codes, ids = _filled(tmp_path, n=20)
    index.close()
    script = textwrap.dedent(
        """
        import os, sys
        import numpy as np
        from cxrhash.index.store import HashIndex
        HashIndex._write_manifest = lambda self, count: os._exit(3)
        index = HashIndex.open(sys.argv[1])
        index.add(np.zeros((5, 2), np.uint8), [f"late-{i}" for i in range(5)], ["x"] * 5)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "idx")], capture_output=True, timeout=120
    )
    assert done.returncode == 3, done.stderr.decode()
    _assert_previous_state(tmp_path / "idx", codes, ids)


def test_truncated_codes_file_is_reported(tmp_path: Path) -> None:
    index, _, _ = _filled(tmp_path, n=30)
    index.close()
    codes_path = tmp_path / "idx" / "codes.npy"
    data = codes_path.read_bytes()
    codes_path.write_bytes(data[:-7])
    with pytest.raises(IndexCorruptError, match="codes.npy"):
        HashIndex.open(tmp_path / "idx")
    codes_path.write_bytes(data[:20])
    with pytest.raises(IndexCorruptError, match="codes.npy"):
        HashIndex.open(tmp_path / "idx")


def test_missing_sqlite_rows_are_reported(tmp_path: Path) -> None:
    index, _, _ = _filled(tmp_path, n=10)
    index.close()
    conn = sqlite3.connect(tmp_path / "idx" / "meta.sqlite")
    with conn:
        conn.execute("DELETE FROM items WHERE row = 4")
    conn.close()
    with pytest.raises(
        IndexCorruptError, match="meta.sqlite holds 9 items but index.json records 10"
    ):
        HashIndex.open(tmp_path / "idx")


def test_empty_index_search(tmp_path: Path) -> None:
    index = HashIndex.create(tmp_path / "idx", BITS, "m")
    rows, dists = index.search_packed(np.zeros((3, 2), np.uint8), 5)
    assert rows.shape == dists.shape == (3, 0)
    assert index.search(np.zeros((2, 2), np.uint8), 5) == [[], []]
    assert os.listdir(tmp_path / "idx")
