"""Merging one index into another (how the parts of ``cxrhash index --nproc N`` become one)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cxrhash.index.calibration import CalibrationSample, read_sample, save_sample
from cxrhash.index.codes import pack_codes
from cxrhash.index.errors import IndexMismatchError
from cxrhash.index.merging import merge_index
from cxrhash.index.pseudonyms import Pseudonymizer
from cxrhash.index.store import HashIndex

BITS = 16
KEY = Pseudonymizer(os.urandom(32))


def _index(path: Path, cases: range, *, key: Pseudonymizer = KEY, **kw: object) -> HashIndex:
    """An index of the cases ``cases`` (films ``f<i>``, patients ``P<i // 2>``) with floats."""
    rng = np.random.default_rng(cases.start)
    floats = rng.normal(size=(len(cases), BITS)).astype(np.float32)
    ix = HashIndex.create(path, BITS, "m1", store_floats=True, pseudonymizer=key, **kw)  # type: ignore[arg-type]
    ix.add(
        pack_codes(floats >= 0),
        case_ids=[f"f{i}" for i in cases],
        findings=["Mass" if i % 3 else "No Finding" for i in cases],
        patient_ids=[f"P{i // 2}" for i in cases],
        floats=floats,
    )
    return ix


def _rows(ix: HashIndex) -> dict[str, tuple]:
    """Every live row as stored: stored id → (code bytes, float bytes, findings, patient, path)."""
    batch = ix.stored_batch(0, ix.n_rows)
    assert batch.floats is not None
    return {
        s: (c.tobytes(), f.tobytes(), fi, p, sp)
        for s, c, f, fi, p, sp in zip(
            batch.stored_ids,
            batch.codes,
            batch.floats,
            batch.findings,
            batch.patient_hashes,
            batch.source_paths,
            strict=True,
        )
    }


def test_a_merge_appends_every_row_as_stored_and_a_second_adds_nothing(tmp_path: Path) -> None:
    with _index(tmp_path / "a", range(0, 30)) as a, _index(tmp_path / "b", range(30, 75)) as b:
        expected = {**_rows(a), **_rows(b)}
        assert merge_index(a, b, chunk=16) == 45
        assert merge_index(a, b, chunk=16) == 0
    with HashIndex.open(tmp_path / "a", pseudonymizer=KEY) as merged:
        assert merged.verify().ok
        assert len(merged) == 75
        assert _rows(merged) == expected
        assert all(merged.contains([f"f{i}" for i in range(75)]))
        assert merged.patient_hash("P20") == KEY.patient("P20")  # the same pseudonyms
        top = merged.search(merged.codes[40:41], 1)[0][0]  # a merged film finds itself
        assert top.distance == 0


def test_rows_removed_from_the_part_or_already_in_the_target_are_not_merged(
    tmp_path: Path,
) -> None:
    with _index(tmp_path / "a", range(0, 10)) as a, _index(tmp_path / "b", range(5, 25)) as b:
        b.remove(["f20", "f21"])
        assert merge_index(a, b, chunk=7) == 13  # f10…f24 but f20, f21; f5…f9 held already
        assert len(a) == 23
        assert a.contains(["f20", "f21", "f9", "f24"]) == [False, False, True, True]


@pytest.mark.parametrize(
    ("other", "what"),
    [
        ({"key": Pseudonymizer(os.urandom(32))}, "pseudonym key"),
        ({"store_floats": False}, "float store"),
        ({"source_names": True}, "source names"),
    ],
)
def test_an_index_made_otherwise_is_refused_whole(
    tmp_path: Path, other: dict[str, object], what: str
) -> None:
    key = other.pop("key", KEY)
    floats = other.pop("store_floats", True)
    with _index(tmp_path / "a", range(0, 10)) as a:
        b = HashIndex.create(
            tmp_path / "b",
            BITS,
            "m1",
            store_floats=bool(floats),
            pseudonymizer=key,
            **other,  # type: ignore[arg-type]
        )
        with b, pytest.raises(IndexMismatchError, match=what):
            merge_index(a, b)
        assert len(a) == 10


def test_the_parts_closeness_samples_join_weighted_by_the_films_they_stand_for(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)

    def sample(n: int, represented: int, shift: float) -> CalibrationSample:
        return CalibrationSample(
            "m1",
            (rng.normal(size=(n, 6)) + shift).astype(np.float32),
            rng.normal(size=(n, BITS)).astype(np.float32),
            represented,
            rng.normal(size=(n, 4)).astype(np.float32),
        )

    with _index(tmp_path / "a", range(0, 10)) as a, _index(tmp_path / "b", range(10, 20)) as b:
        save_sample(a.path, sample(3000, 3000, 0.0))
        save_sample(b.path, sample(3000, 9000, 10.0))
        merge_index(a, b)
    merged = read_sample(tmp_path / "a", "m1", BITS)
    assert merged is not None and merged.represented == 12000
    from_b = float((merged.stats[:, 0] > 5).mean())
    # b stands for 3 of every 4 films: drawn with that weight (without replacement, so
    # short of 3/4), not as the even half an unweighted draw would keep
    assert 0.6 < from_b <= 3000 / len(merged)
