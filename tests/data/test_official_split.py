from pathlib import Path

import numpy as np
import pytest

from cxrhash.data.splits import SplitError, official_nih_split


def _lists(tmp_path: Path, train_val: list[str], test: list[str]) -> Path:
    (tmp_path / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (tmp_path / "test_list.txt").write_text("\n".join(test) + "\n")
    return tmp_path


def test_parts_follow_the_official_lists(tmp_path: Path) -> None:
    case_ids = [f"{p:08d}_{v:03d}.png" for p in range(40) for v in range(3)]
    patients = [c.split("_")[0] for c in case_ids]
    train_val = [c for c in case_ids if int(c[:8]) < 28]
    test = [c for c in case_ids if 28 <= int(c[:8]) < 38]  # patients 38, 39 unlisted
    fractions = {"train": 0.6, "val": 0.1, "query": 0.1, "database": 0.2}
    split = official_nih_split(case_ids, patients, _lists(tmp_path, train_val, test), fractions, 0)
    names = {k: {case_ids[i] for i in v} for k, v in split.items()}
    assert names["train"] | names["val"] == set(train_val)
    assert names["query"] | names["database"] == set(test)
    pats = {k: {patients[i] for i in v} for k, v in split.items()}
    assert not pats["train"] & pats["val"] and not pats["query"] & pats["database"]
    assert len(split["train"]) > 4 * len(split["val"])  # 0.6 : 0.1 within the list
    again = official_nih_split(case_ids, patients, tmp_path, fractions, 0)
    assert all(np.array_equal(split[k], again[k]) for k in split)


def test_missing_list_is_named(tmp_path: Path) -> None:
    with pytest.raises(SplitError, match="test_list.txt"):
        (tmp_path / "train_val_list.txt").write_text("a.png\n")
        official_nih_split(["a.png"], ["1"], tmp_path, {"train": 0.5, "val": 0.5}, 0)
