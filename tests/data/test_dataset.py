"""CXRDataset items, skipping of unreadable images, collation, subsets, joining."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cxrhash.data.dataset import (
    CXRDataset,
    DataFormatError,
    SkippedSample,
    collate_skipping,
    concat_datasets,
)

PATHOLOGIES = ["A", "B", "C"]


def _labels(n: int) -> np.ndarray:
    return (np.arange(n * 3).reshape(n, 3) % 2).astype(np.float32)


def _files_dataset(tmp_path: Path, **kwargs) -> CXRDataset:
    """Five items: two good PNGs, a truncated PNG, an empty file, a text file named .png."""
    good = np.zeros((32, 48), dtype=np.uint8)
    good[:, 24:] = 255
    Image.fromarray(good).save(tmp_path / "good0.png")
    Image.fromarray(255 - good).save(tmp_path / "good1.png")
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "full.png").read_bytes()[:300])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    names = ["good0", "truncated", "good1", "empty", "text"]
    return CXRDataset(
        case_ids=names,
        patient_ids=["p0", "p0", "p1", "p2", "p3"],
        labels=_labels(5),
        pathologies=PATHOLOGIES,
        paths=[str(tmp_path / f"{n}.png") for n in names],
        image_size=16,
        **kwargs,
    )


def test_item_is_a_square_tensor_with_labels(tmp_path: Path) -> None:
    ds = _files_dataset(tmp_path)
    item = ds[0]
    assert set(item) == {"idx", "img", "lab", "case_id", "patient_id"}
    assert item["img"].shape == (1, 16, 16) and item["img"].dtype == torch.float32
    # 32×48 image, left half dark: the centre 32×32 crop is dark left, bright right.
    assert item["img"][0, :, :6].max() < 0.05 and item["img"][0, :, 10:].min() > 0.95
    assert torch.equal(item["lab"], torch.from_numpy(_labels(5)[0]))
    assert (item["idx"], item["case_id"], item["patient_id"]) == (0, "good0", "p0")


def test_unreadable_images_become_skipped_samples_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = _files_dataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            items = [ds[i] for i in range(len(ds))]
    skipped = [it for it in items if isinstance(it, SkippedSample)]
    assert [s.case_id for s in skipped] == ["truncated", "empty", "text"]
    assert skipped[1].reason == "file is empty" and skipped[1].path.endswith("empty.png")
    assert len([r for r in caplog.records if "skipping item" in r.message]) == 3


def test_collate_skipping_stacks_good_and_counts_skipped(tmp_path: Path) -> None:
    ds = _files_dataset(tmp_path)
    batches = list(DataLoader(ds, batch_size=5, collate_fn=collate_skipping))
    batch = batches[0]
    assert batch["img"].shape == (2, 1, 16, 16)
    assert batch["lab"].shape == (2, 3)
    assert batch["idx"].tolist() == [0, 2] and batch["idx"].dtype == torch.long
    assert batch["case_id"] == ["good0", "good1"]
    assert len(batch["skipped"]) == 3


def test_collate_all_skipped_gives_none_images() -> None:
    batch = collate_skipping([SkippedSample(0, "a", None, "x"), SkippedSample(1, "b", "p", "y")])
    assert batch["img"] is None and batch["lab"] is None
    assert batch["idx"].numel() == 0 and len(batch["skipped"]) == 2


def test_array_backed_subset_and_resize() -> None:
    arrays = np.stack([np.full((8, 8), v, dtype=np.uint8) for v in (0, 51, 102, 255)])
    ds = CXRDataset(
        case_ids=["a", "b", "c", "d"],
        patient_ids=["1", "2", "3", "4"],
        labels=_labels(4),
        pathologies=PATHOLOGIES,
        arrays=arrays,
        image_size=8,
    )
    sub = ds.subset([3, 1])
    assert sub.case_ids == ["d", "b"] and np.array_equal(sub.labels, _labels(4)[[3, 1]])
    assert torch.allclose(sub[0]["img"], torch.ones(1, 8, 8))
    assert torch.allclose(sub[1]["img"], torch.full((1, 8, 8), 0.2))
    big = sub.with_image_size(12, augment=True)
    assert big[1]["img"].shape == (1, 12, 12) and big.augment and not sub.augment
    assert sub.paths == [None, None]


def test_augmentation_is_small_and_keeps_laterality(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ds = _files_dataset(tmp_path, augment=True)
    plain = _files_dataset(tmp_path)[0]["img"]
    for _ in range(10):
        img = ds[0]["img"]
        assert img.shape == (1, 16, 16) and 0.0 <= img.min() and img.max() <= 1.0
        # A flip would swap the dark and bright halves: mean error ~1, not small.
        assert (img - plain).abs().mean() < 0.25
        assert img[0, :, :8].mean() < img[0, :, 8:].mean()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"patient_ids": ["p"]}, "1 patient ids for 2 case ids"),
        ({"labels": np.zeros((2, 2))}, r"labels have shape \(2, 2\), expected \(2, 3\)"),
        ({"paths": ["x"]}, "1 paths for 2 case ids"),
        ({"case_ids": ["a", "a"]}, "duplicate case ids"),
        ({"paths": None}, "exactly one of paths or arrays"),
    ],
)
def test_inconsistent_inputs_raise(change: dict, message: str) -> None:
    kwargs = {
        "case_ids": ["a", "b"],
        "patient_ids": ["p", "q"],
        "labels": np.zeros((2, 3)),
        "pathologies": PATHOLOGIES,
        "paths": ["x", "y"],
    }
    kwargs.update(change)
    with pytest.raises(DataFormatError, match=message):
        CXRDataset(**kwargs)


def _tiny(ids: list[str], name: str, pathologies: list[str] = PATHOLOGIES) -> CXRDataset:
    return CXRDataset(
        case_ids=ids,
        patient_ids=ids,
        labels=np.zeros((len(ids), len(pathologies))),
        pathologies=pathologies,
        paths=ids,
        name=name,
    )


def test_concat_joins_and_rejects_duplicates_or_other_pathologies() -> None:
    joined = concat_datasets([_tiny(["a", "b"], "one"), _tiny(["c"], "two")])
    assert joined.case_ids == ["a", "b", "c"] and joined.paths == ["a", "b", "c"]
    assert joined.labels.shape == (3, 3)
    with pytest.raises(DataFormatError, match="'b' appears in both 'one' and 'two'"):
        concat_datasets([_tiny(["a", "b"], "one"), _tiny(["b"], "two")])
    with pytest.raises(DataFormatError, match="expected the same list"):
        concat_datasets([_tiny(["a"], "one"), _tiny(["b"], "two", ["A"])])
