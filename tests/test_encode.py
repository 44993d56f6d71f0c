"""Encoding a dataset batch by batch: order, unreadable images, eval mode, batch independence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cxrhash.data.dataset import CXRDataset
from cxrhash.encode import encode_dataset, iter_encoded_batches
from cxrhash.index.codes import pack_codes
from cxrhash.models.output import HashOutput

SIZE, BITS = 8, 12


class PixelHasher(nn.Module):
    """Codes from a fixed projection of the pixels, behind a dropout that only eval disables."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.drop = nn.Dropout(0.5)
        self.proj = nn.Linear(SIZE * SIZE, BITS, bias=False)

    def forward(self, x: torch.Tensor) -> HashOutput:
        flat = x.flatten(1)
        h = self.proj(self.drop(flat))
        return HashOutput(hash=h, logits=h[:, :2], features=flat)


def _dataset(tmp_path: Path, n: int, missing: set[int]) -> CXRDataset:
    """n films of random pixels on disk, the ``missing`` ones absent."""
    rng = np.random.default_rng(0)
    paths: list[str | None] = []
    for i in range(n):
        path = tmp_path / f"f{i}.png"
        if i not in missing:
            Image.fromarray(rng.integers(0, 256, size=(SIZE, SIZE), dtype=np.uint8)).save(path)
        paths.append(str(path))
    labels = (np.arange(2 * n).reshape(n, 2) % 3 == 0).astype(np.float32)
    return CXRDataset(
        case_ids=[f"c{i}" for i in range(n)],
        patient_ids=[f"p{i}" for i in range(n)],
        labels=labels,
        pathologies=["Mass", "Effusion"],
        paths=paths,
        image_size=SIZE,
        name="films",
    )


def _expected(model: PixelHasher, ds: CXRDataset, rows: list[int]) -> np.ndarray:
    """The hash outputs of ``rows``, one film at a time in eval mode."""
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(ds[i]["img"][None]).hash.numpy() for i in rows])


def test_encoded_rows_follow_the_dataset_and_unreadable_films_are_listed(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, 10, missing={2, 7})
    model = PixelHasher().train()  # encoding must switch off the dropout
    enc = encode_dataset(model, ds, batch_size=3, progress=False)
    readable = [0, 1, 3, 4, 5, 6, 8, 9]
    assert not model.training
    assert enc.indices.tolist() == readable
    assert enc.case_ids == [f"c{i}" for i in readable]
    np.testing.assert_array_equal(enc.labels, ds.labels[readable])
    np.testing.assert_allclose(enc.hashes, _expected(model, ds, readable), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(enc.features[1], ds[1]["img"].flatten().numpy())
    np.testing.assert_array_equal(enc.codes, pack_codes(enc.hashes >= 0))
    assert enc.hashes.dtype == enc.features.dtype == np.float32
    assert [(s.idx, s.case_id) for s in enc.skipped] == [(2, "c2"), (7, "c7")]
    assert all(s.path and s.reason for s in enc.skipped) and enc.seconds > 0


def test_the_batch_size_changes_nothing(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, 9, missing={4})
    one = encode_dataset(PixelHasher(), ds, batch_size=1, progress=False)
    all_ = encode_dataset(PixelHasher(), ds, batch_size=64, progress=False)
    np.testing.assert_allclose(one.hashes, all_.hashes, rtol=1e-5, atol=1e-6)
    assert one.indices.tolist() == all_.indices.tolist() and one.case_ids == all_.case_ids


def test_a_batch_with_no_readable_film_yields_no_output(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, 5, missing={0, 1, 2})
    batches = list(iter_encoded_batches(PixelHasher(), ds, batch_size=3, progress=False))
    assert [out is None for out, _ in batches] == [True, False]
    assert [s.idx for s in batches[0][1]["skipped"]] == [0, 1, 2]
    out, batch = batches[1]
    assert out is not None and out.hash.shape == (2, BITS)
    assert batch["case_id"] == ["c3", "c4"] and batch["idx"].tolist() == [3, 4]


def test_nothing_readable_is_an_error_naming_the_dataset(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, 3, missing={0, 1, 2})
    with pytest.raises(ValueError, match=r"no readable image in films \(3 skipped\)"):
        encode_dataset(PixelHasher(), ds, batch_size=2, progress=False)
