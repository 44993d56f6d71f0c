"""Patient-disjoint splits: disjointness, determinism, fractions, saving and loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxrhash.data.splits import SplitError, load_split, patient_disjoint_split, save_split

FRACTIONS = {"train": 0.6, "val": 0.1, "query": 0.1, "database": 0.2}


def _patients(n_patients: int = 200, seed: int = 3) -> list[str]:
    counts = np.random.default_rng(seed).integers(1, 6, size=n_patients)
    return [f"p{p}" for p, c in enumerate(counts) for _ in range(c)]


def test_parts_cover_every_index_once_and_are_patient_disjoint() -> None:
    patients = _patients()
    split = patient_disjoint_split(patients, FRACTIONS, seed=0)
    assert list(split) == list(FRACTIONS)
    joined = np.concatenate(list(split.values()))
    assert np.array_equal(np.sort(joined), np.arange(len(patients)))
    owners = {}
    for name, idx in split.items():
        assert np.array_equal(idx, np.sort(idx)) and idx.dtype == np.int64
        for i in idx:
            assert owners.setdefault(patients[i], name) == name


def test_image_shares_are_close_to_fractions() -> None:
    patients = _patients()
    split = patient_disjoint_split(patients, FRACTIONS, seed=1)
    for name, fraction in FRACTIONS.items():
        # Greedy filling stays within one patient's images (≤ 5) of the target.
        assert abs(len(split[name]) - fraction * len(patients)) <= 5


def test_same_seed_same_split_other_seed_other_split() -> None:
    patients = _patients()
    a = patient_disjoint_split(patients, FRACTIONS, seed=7)
    b = patient_disjoint_split(list(patients), FRACTIONS, seed=7)
    c = patient_disjoint_split(patients, FRACTIONS, seed=8)
    assert all(np.array_equal(a[k], b[k]) for k in FRACTIONS)
    assert not all(np.array_equal(a[k], c[k]) for k in FRACTIONS)


def test_too_few_patients_names_the_empty_part() -> None:
    with pytest.raises(SplitError, match=r"part '(val|query)' is empty: 3 patients"):
        patient_disjoint_split(["a", "a", "b", "c"], FRACTIONS, seed=0)


@pytest.mark.parametrize("fractions", [{"train": 0.7, "test": 0.2}, {"train": 1.2, "test": -0.2}])
def test_bad_fractions_raise(fractions: dict[str, float]) -> None:
    with pytest.raises(SplitError):
        patient_disjoint_split(_patients(20), fractions, seed=0)


def test_save_load_round_trip_by_case_id(tmp_path: Path) -> None:
    patients = _patients(50)
    case_ids = [f"img{i:04d}.png" for i in range(len(patients))]
    split = patient_disjoint_split(patients, FRACTIONS, seed=0)
    path = tmp_path / "run" / "split.json"
    save_split(path, split, case_ids, meta={"seed": 0})
    assert json.loads(path.read_text())["parts"]["val"][0] == case_ids[split["val"][0]]
    # Reloading on the same data in another order maps case ids back correctly.
    order = np.random.default_rng(0).permutation(len(case_ids))
    shuffled = [case_ids[i] for i in order]
    loaded = load_split(path, shuffled)
    for name, idx in split.items():
        assert sorted(shuffled[i] for i in loaded[name]) == sorted(case_ids[i] for i in idx)


def test_load_split_rejects_unknown_case_ids(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    save_split(path, {"train": np.array([0]), "test": np.array([1])}, ["a", "b"])
    with pytest.raises(SplitError, match=r"part 'test' lists 1 case id\(s\) absent.*'b'"):
        load_split(path, ["a", "c"])
    path.write_text("{}")
    with pytest.raises(SplitError, match="not a split file"):
        load_split(path, ["a"])
