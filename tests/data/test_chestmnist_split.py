"""ChestMNIST: all three official parts in one dataset, and splits that keep them apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrhash.bench.grid import GridSpec
from cxrhash.bench.runner import BenchSpec, cache_splits
from cxrhash.data.dataset import DataFormatError, StackedArrays
from cxrhash.data.readers import chestmnist_official_parts, open_dataset
from cxrhash.data.splits import SplitError, make_split, official_chestmnist_split

SIZES = {"train": 16, "val": 4, "test": 20}
FRACTIONS = {"train": 0.6, "val": 0.1, "query": 0.1, "database": 0.2}


def _npz(path: Path, compressed: bool = False) -> dict[str, np.ndarray]:
    """A MedMNIST-layout ChestMNIST file with small random train/val/test parts."""
    rng = np.random.default_rng(1)
    arrays: dict[str, np.ndarray] = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 14)).astype(np.uint8)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


@pytest.mark.parametrize("compressed", [False, True])
def test_spec_without_split_reads_all_three_official_parts(
    tmp_path: Path, compressed: bool
) -> None:
    raw = _npz(tmp_path / "c.npz", compressed)
    ds = open_dataset(f"chestmnist:{tmp_path / 'c.npz'}", 28)
    assert len(ds) == sum(SIZES.values())
    parts = chestmnist_official_parts(ds.case_ids)
    assert parts == ["train"] * 16 + ["val"] * 4 + ["test"] * 20
    # rows on both sides of each part boundary come from the right array
    for row, (split, i) in {
        15: ("train", 15),
        16: ("val", 0),
        19: ("val", 3),
        20: ("test", 0),
    }.items():
        expect = torch.from_numpy(raw[f"{split}_images"][i] / 255.0).float()
        assert torch.allclose(ds[row]["img"][0], expect)
        assert ds.case_ids[row] == f"chestmnist-{split}-{i:06d}"
    # one pseudo-patient per image: no patient id can span two official parts
    assert len(set(ds.patient_ids)) == len(ds)
    only_val = open_dataset(f"chestmnist:{tmp_path / 'c.npz'}?split=val", 28)
    assert only_val.case_ids == ds.case_ids[16:20]
    assert np.array_equal(only_val.labels, ds.labels[16:20])


def test_split_keeps_the_official_parts_apart(tmp_path: Path) -> None:
    _npz(tmp_path / "c.npz")
    ds = open_dataset(f"chestmnist:{tmp_path / 'c.npz'}", 28)
    split = make_split(ds.case_ids, ds.patient_ids, FRACTIONS, seed=0)
    parts = np.asarray(chestmnist_official_parts(ds.case_ids))
    assert np.array_equal(split["train"], np.flatnonzero(parts == "train"))
    assert np.array_equal(split["val"], np.flatnonzero(parts == "val"))
    test = np.concatenate([split["query"], split["database"]])
    assert np.array_equal(np.sort(test), np.flatnonzero(parts == "test"))
    assert not set(split["query"]) & set(split["database"])
    assert (len(split["query"]), len(split["database"])) == (7, 13)  # 0.1 : 0.2 of the 20
    train_patients = {ds.patient_ids[i] for k in ("train", "val") for i in split[k]}
    assert not train_patients & {ds.patient_ids[i] for i in test}
    other = make_split(ds.case_ids, ds.patient_ids, FRACTIONS, seed=1)
    assert not np.array_equal(other["query"], split["query"])  # the seed draws the queries


def test_one_official_part_is_split_like_any_dataset(tmp_path: Path) -> None:
    _npz(tmp_path / "c.npz")
    ds = open_dataset(f"chestmnist:{tmp_path / 'c.npz'}?split=test", 28)
    split = make_split(ds.case_ids, ds.patient_ids, FRACTIONS, seed=0)
    assert sum(len(v) for v in split.values()) == 20 and len(split["train"]) == 12


def test_missing_official_part_and_foreign_ids_are_refused() -> None:
    ids = [f"chestmnist-train-{i:06d}" for i in range(5)] + ["chestmnist-test-000000"]
    with pytest.raises(SplitError, match=r"part\(s\) \['val'\] hold no image"):
        official_chestmnist_split(ids, ids, FRACTIONS, 0)
    assert chestmnist_official_parts(["chestmnist-train-000001", "00000001_000.png"]) is None
    with pytest.raises(SplitError, match="not ChestMNIST case ids"):
        official_chestmnist_split(["a.png"], ["1"], FRACTIONS, 0)


def test_bench_caches_the_official_split(tmp_path: Path) -> None:
    _npz(tmp_path / "c.npz")
    spec = BenchSpec(
        data=f"chestmnist:{tmp_path / 'c.npz'}", profile="test", grid=GridSpec(seeds=(0,))
    )
    path = cache_splits(spec, tmp_path / "bench")[0]
    parts = json.loads(path.read_text())["parts"]
    assert {c.split("-")[1] for c in parts["train"]} == {"train"}
    assert {c.split("-")[1] for c in parts["val"]} == {"val"}
    assert {c.split("-")[1] for c in parts["query"] + parts["database"]} == {"test"}


def test_stacked_arrays_refuse_mismatched_parts() -> None:
    with pytest.raises(DataFormatError, match="different H×W"):
        StackedArrays([np.zeros((2, 4, 4), np.uint8), np.zeros((2, 5, 5), np.uint8)])
    stack = StackedArrays([np.zeros((2, 4, 4), np.uint8), np.ones((1, 4, 4), np.uint8)])
    assert stack.shape == (3, 4, 4) and stack[2].max() == 1
    with pytest.raises(IndexError):
        stack[3]


def test_training_split_of_chestmnist_follows_the_official_parts(tmp_path: Path) -> None:
    from cxrhash.config import make_config
    from cxrhash.training.trainer import resolve_split

    _npz(tmp_path / "c.npz")
    ds = open_dataset(f"chestmnist:{tmp_path / 'c.npz'}", 28)
    config = make_config("test", data=f"chestmnist:{tmp_path / 'c.npz'}")
    split = resolve_split(config, ds, tmp_path)
    parts = np.asarray(chestmnist_official_parts(ds.case_ids))
    assert set(parts[split["train"]]) == {"train"} and set(parts[split["val"]]) == {"val"}
    assert set(parts[np.concatenate([split["query"], split["database"]])]) == {"test"}
    assert (tmp_path / "split.json").exists()
