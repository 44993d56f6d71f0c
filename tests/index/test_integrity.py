"""Metadata checksums and the removal record of a HashIndex (issue #11, finding 6)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path

import numpy as np
import pytest
from conftest import subprocess_env

from cxrhash.index.backends.synthetic import uniform_codes
from cxrhash.index.integrity import MetaSeal, parse_ranges, ranges_to_rows, rows_to_ranges
from cxrhash.index.meta import MetaStore
from cxrhash.index.store import ConcurrentWriteError, HashIndex, IndexCorruptError

BITS = 32
N = 10_000  # blocks of 4096 rows: 0–4095, 4096–8191, 8192–9999


def _add(index: HashIndex, start: int, n: int) -> np.ndarray:
    codes = uniform_codes(n, BITS, seed=start)
    index.add(
        codes,
        [f"c{i}" for i in range(start, start + n)],
        [f"finding-{i % 7}" for i in range(start, start + n)],
        patient_ids=[f"P{i // 3}" for i in range(start, start + n)],
        source_paths=[f"/films/{i}.png" for i in range(start, start + n)],
    )
    return codes


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A closed index of N rows in two adds (its path and codes)."""
    index = HashIndex.create(tmp_path / "idx", BITS, "m", source_names=True)
    codes = np.concatenate([_add(index, 0, 6000), _add(index, 6000, N - 6000)])
    index.close()
    return tmp_path / "idx", codes


def _sql(path: Path, statement: str, *args: object) -> None:
    conn = sqlite3.connect(path / "meta.sqlite")
    with conn:
        conn.execute(statement, args)
    conn.close()


# ----------------------------------------------------------------- format


def test_digest_is_sha256_of_the_documented_encoding(tmp_path: Path) -> None:
    meta = MetaStore.create(tmp_path / "meta.sqlite")
    rows = [(0, "it's", "Mass|Nodule", None, "/ü/0.png"), (1, "b", "No Finding", "ab12", None)]
    meta.insert(0, rows)
    text = "0,'it''s','Mass|Nodule',NULL,'/ü/0.png'\n1,'b','No Finding','ab12',NULL\n"
    assert meta.digest(0, 2) == sha256(text.encode()).hexdigest()
    assert meta.digest(1, 2) == sha256(text.split("\n", 1)[1].encode()).hexdigest()
    meta.close()


def test_blocks_and_ranges() -> None:
    seal = MetaSeal(start=5000, block_rows=4096)
    assert seal.n_blocks(5000) == 0 and seal.n_blocks(5001) == 1 and seal.n_blocks(8193) == 2
    assert [seal.block_range(i, 9000) for i in range(2)] == [(5000, 8192), (8192, 9000)]
    assert seal.block_index(np.array([5000, 8191, 8192])).tolist() == [0, 0, 1]
    rows = np.array([9, 3, 4, 5, 11, 12])
    assert rows_to_ranges(rows) == ((3, 6), (9, 10), (11, 13))
    assert ranges_to_rows(rows_to_ranges(rows)).tolist() == [3, 4, 5, 9, 11, 12]
    assert parse_ranges([[3, 6], [9, 13]], 13) == ((3, 6), (9, 13))
    for bad in ([[3, 3]], [[5, 9], [2, 4]], [[0, 14]], [[0.5, 2]], [3, 6], "0-3"):
        with pytest.raises(ValueError):
            parse_ranges(bad, 13)


def test_manifest_records_one_digest_per_block_and_the_removals(
    built: tuple[Path, np.ndarray],
) -> None:
    path, _ = built
    index = HashIndex.open(path)
    index.remove(["c7", "c8", "c9000"])
    manifest = json.loads((path / "index.json").read_text())
    assert manifest["format_version"] == 4
    assert manifest["metadata"]["start"] == 0 and manifest["metadata"]["block_rows"] == 4096
    assert len(manifest["metadata"]["digests"]) == 3  # rows 0–4095, 4096–8191, 8192–9999
    assert manifest["removed"] == [[7, 9], [9000, 9001]]
    report = index.verify()
    assert report.ok and report.verified_rows == N and report.removed == 3
    assert report.lines() == [
        f"OK {path}: {N} rows (3 removed); the codes match their CRC-32s, the metadata of "
        f"all {N} rows matches its SHA-256s"
    ]


def test_single_adds_extend_the_last_block_and_keep_the_manifest_small(tmp_path: Path) -> None:
    index = HashIndex.create(tmp_path / "idx", BITS, "m", source_names=True)
    _add(index, 0, 4094)
    for i in range(4094, 4099):  # across a block boundary, one film at a time
        _add(index, i, 1)
    digests = json.loads((tmp_path / "idx" / "index.json").read_text())["metadata"]["digests"]
    assert len(digests) == 2
    assert digests == [index._meta.digest(0, 4096), index._meta.digest(4096, 4099)]
    index.close()
    assert HashIndex.open(tmp_path / "idx").verify().ok


# ----------------------------------------------------------------- tampering


@pytest.mark.parametrize(
    "column, value",
    [
        ("findings", "No Finding"),
        ("case_id", "someone-else"),
        ("patient_hash", "0" * 64),
        ("source_path", "/films/other.png"),
        ("source_path", None),
    ],
)
def test_an_edited_column_is_never_served(
    built: tuple[Path, np.ndarray], column: str, value: str | None
) -> None:
    path, codes = built
    _sql(path, f"UPDATE items SET {column} = ? WHERE row = 5000", value)
    index = HashIndex.open(path)  # opening stays cheap: the blocks are checked when served
    assert index.search(codes[100], 1)[0][0].case_id == "c100"  # block 0 is intact
    message = rf"the index at {path} is damaged: the metadata of rows 4096–8191 in meta.sqlite"
    with pytest.raises(IndexCorruptError, match=message):
        index.search(codes[5000], 1)
    with pytest.raises(IndexCorruptError, match=message):
        index.search(codes[4096], 1)  # any row of the block, not only the edited one
    with pytest.raises(IndexCorruptError, match=message):
        list(index.iter_metadata())
    with pytest.raises(IndexCorruptError, match=message):
        index.contains(["c4096"])
    report = index.verify()
    assert not report.ok and report.verified_rows == N - 4096
    assert report.lines()[0] == f"CORRUPT {path}: 1 problem(s)"
    assert "rows 4096–8191" in report.lines()[1]


def _damaged(path: Path) -> list[str]:
    return [
        p.split("metadata of ")[1].split(" in meta")[0]
        for p in HashIndex.open(path).verify().problems
    ]


def test_edits_in_several_blocks_are_listed_as_row_ranges(built: tuple[Path, np.ndarray]) -> None:
    path, _ = built
    _sql(path, "UPDATE items SET findings = 'Mass' WHERE row IN (1, 9999)")
    assert _damaged(path) == ["rows 0–4095", "rows 8192–9999"]
    _sql(path, "UPDATE items SET findings = 'Mass' WHERE row = 4100")
    assert _damaged(path) == ["rows 0–9999"]  # adjacent blocks in one run
    _sql(path, "UPDATE items SET findings = 'finding-' || (row % 7) WHERE row IN (1, 4100)")
    assert _damaged(path) == ["rows 8192–9999"]  # restored rows verify again


def test_a_renumbered_row_fails_its_block(built: tuple[Path, np.ndarray]) -> None:
    path, codes = built
    _sql(path, "UPDATE items SET row = -1 WHERE row = 20")  # still N rows below N
    with pytest.raises(IndexCorruptError, match="rows 0–4095"):
        HashIndex.open(path).search(codes[20], 1)


def test_the_last_block_is_checked_before_an_add_extends_it(
    built: tuple[Path, np.ndarray],
) -> None:
    path, _ = built
    _sql(path, "UPDATE items SET findings = 'Mass' WHERE row = 9000")
    index = HashIndex.open(path)
    size = (path / "shards" / "0000.codes").stat().st_size
    with pytest.raises(IndexCorruptError, match="rows 8192–9999"):
        _add(index, N, 5)  # its digest would otherwise seal the edit
    assert (path / "shards" / "0000.codes").stat().st_size == size and len(index) == N


# ----------------------------------------------------------------- removals


def test_an_edited_deleted_flag_is_caught_or_has_no_effect(
    built: tuple[Path, np.ndarray],
) -> None:
    path, codes = built
    index = HashIndex.open(path)
    index.remove(["c30"])
    index.close()
    _sql(path, "UPDATE items SET deleted = 1 WHERE row = 31")  # hides a live film
    with pytest.raises(
        IndexCorruptError,
        match=r"meta.sqlite flags as removed row 31, which index.json records as live",
    ):
        HashIndex.open(path)
    _sql(path, "UPDATE items SET deleted = 0 WHERE row IN (30, 31)")  # brings the removed one back
    index = HashIndex.open(path)
    assert len(index) == N - 1 and index.contains(["c30", "c31"]) == [False, True]
    assert all(h.row != 30 for h in index.search(codes[30], 5)[0])
    assert 30 not in [r for r, _, _ in index.iter_metadata()]
    report = index.verify()
    assert (
        report.ok and "index.json records as removed row 30, not yet flagged" in report.lines()[0]
    )
    _add(index, N, 1)  # a write flags it again
    assert index.verify().notes == []


def test_a_remove_interrupted_before_its_flags_stays_removed(
    built: tuple[Path, np.ndarray],
) -> None:
    path, codes = built
    script = textwrap.dedent(
        """
        import os, sys
        from cxrhash.index.meta import MetaStore
        from cxrhash.index.store import HashIndex
        MetaStore.mark_deleted = lambda self, rows: os._exit(3)  # after the manifest commit
        HashIndex.open(sys.argv[1]).remove(["c40", "c41"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, env=subprocess_env()
    )
    assert done.returncode == 3, done.stderr.decode()
    index = HashIndex.open(path)
    assert len(index) == N - 2 and index.contains(["c40", "c41", "c42"]) == [False, False, True]
    assert {h.row for h in index.search(codes[40:42], 3)[0]}.isdisjoint({40, 41})
    index.add(codes[40:41], ["c40"], ["re-indexed"])  # the unique index needs the flags back
    assert index.search(codes[40], 1)[0][0].findings == "re-indexed"
    assert index.verify().ok and index.verify().notes == []


def test_a_handle_opened_before_another_removes_may_not_write(
    built: tuple[Path, np.ndarray],
) -> None:
    path, codes = built
    first, second = HashIndex.open(path), HashIndex.open(path)
    first.remove(["c1"])
    with pytest.raises(ConcurrentWriteError, match=r"changed by another process.*1 removed"):
        second.add(codes[:1], ["again"], ["x"])


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from cxrhash.index.backends.synthetic import uniform_codes
    from cxrhash.index.store import HashIndex
    index = HashIndex.open(sys.argv[1])
    for b in range(400):
        index.add(uniform_codes(500, 32, seed=b), [f"k{b}-{i}" for i in range(500)], ["f"] * 500)
        index.remove([f"k{b}-{i}" for i in range(0, 500, 7)])
    """
)


def test_sigkill_while_adding_and_removing_reopens_verified(
    tmp_path: Path, kill_writer: Callable[[str, Path], None]
) -> None:
    path = tmp_path / "idx"
    HashIndex.create(path, BITS, "m", source_names=True).close()
    kill_writer(_KILL_SCRIPT, path)
    index = HashIndex.open(path)
    batches = index.n_rows // 500
    assert index.n_rows == batches * 500 and batches >= 1
    gone = ranges_to_rows(index._shards.manifest.removed or ())
    per_batch = {int(b) for b in np.unique(gone // 500)}
    assert per_batch >= set(range(batches - 1))  # all but the last batch's removal committed
    for b in per_batch:
        assert (gone[gone // 500 == b] % 500).tolist() == list(range(0, 500, 7))
    assert index.verify().ok
    listed = {c for _, c, _ in index.iter_metadata()}
    assert len(listed) == len(index) and not any(f"k{b}-0" in listed for b in per_batch)
    index.add(uniform_codes(3, BITS, seed=999), ["z0", "z1", "k0-0"], ["g"] * 3)
    assert HashIndex.open(path).verify().ok


# ----------------------------------------------------------------- older indexes


@pytest.mark.parametrize("version", [2, 3])
def test_an_index_without_checksums_is_refused_with_a_request_to_re_index(
    tmp_path: Path, version: int
) -> None:
    """Formats 2/3 kept reversible salted patient hashes and no metadata checksums: no
    upgrade in place could make their rows trustworthy, so they are re-indexed."""
    path = tmp_path / "idx"
    HashIndex.create(path, BITS, "m", source_names=True).close()
    manifest = json.loads((path / "index.json").read_text())
    for key in ("metadata", "removed", "pseudonyms"):
        del manifest[key]
    manifest.update(format_version=version, salt="ab" * 16)
    (path / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(
        IndexCorruptError, match=f"format-{version} index from an older .* re-index"
    ):
        HashIndex.open(path)


def test_malformed_checksum_fields_are_reported(built: tuple[Path, np.ndarray]) -> None:
    path, _ = built
    good = json.loads((path / "index.json").read_text())
    for change in (
        {"metadata": {**good["metadata"], "digests": good["metadata"]["digests"][:2]}},
        {"metadata": {**good["metadata"], "digests": ["xyz"] * 3}},
        {"metadata": {**good["metadata"], "start": N}},  # would exempt every row
        {"removed": [[5, 3]]},
        {"removed": [[0, N + 1]]},
    ):
        (path / "index.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(IndexCorruptError, match="malformed field"):
            HashIndex.open(path)
    del good["removed"]
    (path / "index.json").write_text(json.dumps(good))
    with pytest.raises(IndexCorruptError, match="lacks the field.*removed"):
        HashIndex.open(path)
