"""Readers: NIH CSV (+ folders, official lists, missing files), CheXpert, ChestMNIST,
folder + CSV, CLI specs, and the real cxr-dev sample."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrhash.data.dataset import DataFormatError
from cxrhash.data.labels import (
    CHEXPERT_PATHOLOGIES,
    NIH_PATHOLOGIES,
    PHANTOM_PATHOLOGIES,
    LabelError,
)
from cxrhash.data.readers import (
    open_dataset,
    read_chestmnist,
    read_chexpert,
    read_folder,
    read_nih,
    read_nih_dir,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
NIH_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID"]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_png(path: Path, value: int = 128, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)


def _nih(root: Path, rows: list[tuple[str, str, str]], image_dir: str = "images") -> Path:
    for name, _, _ in rows:
        _write_png(root / image_dir / name)
    return _write_csv(root / "labels.csv", NIH_HEADER, [[n, f, "0", p] for n, f, p in rows])


ROWS = [
    ("00000001_000.png", "Cardiomegaly|Effusion", "1"),
    ("00000001_001.png", "No Finding", "1"),
    ("00000002_000.png", "Pleural_Thickening", "2"),
]


def test_read_nih_labels_patients_and_paths(tmp_path: Path) -> None:
    ds = read_nih(_nih(tmp_path, ROWS), image_size=16)
    assert ds.pathologies == NIH_PATHOLOGIES
    assert ds.case_ids == [r[0] for r in ROWS] and ds.patient_ids == ["1", "1", "2"]
    expected = np.zeros((3, 14), dtype=np.float32)
    expected[0, NIH_PATHOLOGIES.index("Cardiomegaly")] = 1
    expected[0, NIH_PATHOLOGIES.index("Effusion")] = 1
    expected[2, NIH_PATHOLOGIES.index("Pleural_Thickening")] = 1
    assert np.array_equal(ds.labels, expected)
    assert ds.paths[2] == str(tmp_path / "images" / "00000002_000.png")
    assert ds[1]["img"].shape == (1, 16, 16)


def test_read_nih_finds_nih_download_layout(tmp_path: Path) -> None:
    # NIH's download: images_001/images/*.png, images_002/images/*.png
    csv_path = _write_csv(
        tmp_path / "Data_Entry_2017.csv", NIH_HEADER, [[n, f, "0", p] for n, f, p in ROWS]
    )
    _write_png(tmp_path / "images_001" / "images" / ROWS[0][0])
    _write_png(tmp_path / "images_002" / "images" / ROWS[1][0])
    _write_png(tmp_path / "images_002" / "images" / ROWS[2][0])
    ds = read_nih(csv_path)
    assert ds.paths[0] == str(tmp_path / "images_001" / "images" / ROWS[0][0])
    assert ds.paths[2] == str(tmp_path / "images_002" / "images" / ROWS[2][0])
    explicit = read_nih(csv_path, [tmp_path / "images_002", tmp_path / "images_001"])
    assert explicit.paths == ds.paths


def test_missing_images_error_or_skip(tmp_path: Path) -> None:
    csv_path = _nih(tmp_path, ROWS)
    (tmp_path / "images" / ROWS[1][0]).unlink()
    with pytest.raises(DataFormatError, match=r"1 image file\(s\) not found.*00000001_001.png"):
        read_nih(csv_path)
    ds = read_nih(csv_path, on_missing="skip")
    assert ds.case_ids == [ROWS[0][0], ROWS[2][0]]


def test_official_split_keeps_listed_images(tmp_path: Path) -> None:
    csv_path = _nih(tmp_path, ROWS)
    listing = tmp_path / "test_list.txt"
    listing.write_text(f"{ROWS[2][0]}\n99999999_000.png\n")
    ds = read_nih(csv_path, official_split=listing)
    assert ds.case_ids == [ROWS[2][0]]
    listing.write_text("99999999_000.png\n")
    with pytest.raises(DataFormatError, match="no items left"):
        read_nih(csv_path, official_split=listing)


def test_missing_column_is_named_with_the_columns_present(tmp_path: Path) -> None:
    csv_path = _write_csv(tmp_path / "labels.csv", ["Image Index", "Patient ID"], [["a.png", "1"]])
    with pytest.raises(DataFormatError, match=r"'Finding Labels'.*\['Image Index', 'Patient ID'\]"):
        read_nih(csv_path)


def test_unknown_label_names_the_line(tmp_path: Path) -> None:
    csv_path = _nih(tmp_path, [*ROWS, ("00000003_000.png", "Mass|Dragon", "3")])
    with pytest.raises(LabelError, match=r"labels.csv line 5: unknown finding 'Dragon'"):
        read_nih(csv_path)


def test_pathologies_auto_and_override(tmp_path: Path) -> None:
    csv_path = _nih(tmp_path, ROWS)
    auto = read_nih(csv_path, pathologies="auto")
    assert auto.pathologies == ["Cardiomegaly", "Effusion", "Pleural_Thickening"]
    assert np.array_equal(auto.labels, [[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    with pytest.raises(LabelError, match="Pleural_Thickening"):
        read_nih(csv_path, pathologies=PHANTOM_PATHOLOGIES)


def test_read_nih_dir_joins_csvs_each_with_its_images(tmp_path: Path) -> None:
    _nih(tmp_path, ROWS[:2])
    _nih(tmp_path / "lowres", ROWS[2:])
    ds = read_nih_dir(tmp_path)
    assert ds.case_ids == [r[0] for r in ROWS]
    assert ds.paths[2] == str(tmp_path / "lowres" / "images" / ROWS[2][0])
    _nih(tmp_path / "copy", ROWS[:1])
    with pytest.raises(DataFormatError, match="00000001_000.png' appears in both"):
        read_nih_dir(tmp_path)


def _chexpert(tmp_path: Path) -> Path:
    columns = ["Pleural Effusion" if c == "Effusion" else c for c in CHEXPERT_PATHOLOGIES]
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", *columns]
    paths = [
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
        "CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg",
        "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg",
    ]
    for p in paths:
        _write_png(tmp_path / p)
    obs = [[""] * len(columns) for _ in paths]
    obs[0][CHEXPERT_PATHOLOGIES.index("Effusion")] = "1.0"
    obs[0][CHEXPERT_PATHOLOGIES.index("Edema")] = "-1.0"
    obs[1][CHEXPERT_PATHOLOGIES.index("Edema")] = "0.0"
    views = ["Frontal", "Lateral", "Frontal"]
    rows = [[p, "F", "50", v, "AP", "", *o] for p, v, o in zip(paths, views, obs, strict=True)]
    return _write_csv(tmp_path / "CheXpert-v1.0-small" / "train.csv", header, rows)


@pytest.mark.parametrize(("policy", "value"), [("ones", 1.0), ("zeros", 0.0), ("ignore", np.nan)])
def test_read_chexpert_uncertainty_policies(tmp_path: Path, policy: str, value: float) -> None:
    ds = read_chexpert(_chexpert(tmp_path), uncertain=policy, image_size=8)
    edema, effusion = CHEXPERT_PATHOLOGIES.index("Edema"), CHEXPERT_PATHOLOGIES.index("Effusion")
    assert ds.pathologies == CHEXPERT_PATHOLOGIES
    np.testing.assert_equal(ds.labels[0, edema], value)
    assert ds.labels[0, effusion] == 1.0 and ds.labels[1, edema] == 0.0
    assert np.isnan(ds.labels[2]).all()  # blank = unknown
    assert ds.patient_ids == ["patient00001", "patient00001", "patient00002"]
    assert ds[0]["img"].shape == (1, 8, 8)  # resolved against the CSV folder's parent


def test_read_chexpert_frontal_only(tmp_path: Path) -> None:
    ds = read_chexpert(_chexpert(tmp_path), tmp_path, frontal_only=True)
    assert [c.rsplit("/", 1)[1] for c in ds.case_ids] == ["view1_frontal.jpg"] * 2


def _chestmnist(path: Path, compressed: bool) -> np.ndarray:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(5, 14)).astype(np.uint8)
    images = rng.integers(0, 256, size=(5, 28, 28)).astype(np.uint8)
    save = np.savez_compressed if compressed else np.savez
    save(
        path,
        test_images=images,
        test_labels=labels,
        train_images=images[:1],
        train_labels=labels[:1],
    )
    return labels


@pytest.mark.parametrize("compressed", [False, True])
def test_read_chestmnist_reorders_labels_into_nih_order(tmp_path: Path, compressed: bool) -> None:
    labels = _chestmnist(tmp_path / "chestmnist.npz", compressed)
    ds = read_chestmnist(tmp_path / "chestmnist.npz", "test", image_size=28)
    medmnist_order = [
        "atelectasis",
        "cardiomegaly",
        "effusion",
        "infiltration",
        "mass",
        "nodule",
        "pneumonia",
        "pneumothorax",
        "consolidation",
        "edema",
        "emphysema",
        "fibrosis",
        "pleural_thickening",
        "hernia",
    ]
    for j, name in enumerate(NIH_PATHOLOGIES):
        assert np.array_equal(ds.labels[:, j], labels[:, medmnist_order.index(name.lower())])
    assert len(ds) == 5 and len(set(ds.patient_ids)) == 5
    with np.load(tmp_path / "chestmnist.npz") as raw:
        expected = torch.from_numpy(raw["test_images"][3] / 255.0).float()
    assert torch.allclose(ds[3]["img"][0], expected)
    with pytest.raises(DataFormatError, match="no array 'val_images'"):
        read_chestmnist(tmp_path / "chestmnist.npz", "val")


def test_read_folder_with_nested_paths(tmp_path: Path) -> None:
    _write_png(tmp_path / "imgs" / "a" / "1.png")
    _write_png(tmp_path / "imgs" / "b" / "2.png", value=255)
    csv_path = _write_csv(
        tmp_path / "list.csv",
        ["path", "labels", "patient_id"],
        [["a/1.png", "Nodule;Mass", "x"], ["b/2.png", "", "y"]],
    )
    ds = read_folder(tmp_path / "imgs", csv_path, sep=";", image_size=4)
    assert ds.pathologies == ["Mass", "Nodule"]
    assert np.array_equal(ds.labels, [[1, 1], [0, 0]])
    assert torch.allclose(ds[1]["img"], torch.ones(1, 4, 4))
    with pytest.raises(DataFormatError, match="missing column.*'patient'"):
        read_folder(tmp_path / "imgs", csv_path, patient_column="patient")


def test_open_dataset_specs(tmp_path: Path) -> None:
    _nih(tmp_path / "nih", ROWS)
    assert len(open_dataset(f"nih:{tmp_path / 'nih'}", 8)) == 3
    assert len(open_dataset(f"nih:{tmp_path / 'nih' / 'labels.csv'}?pathologies=auto", 8)) == 3
    _nih(tmp_path / "ph", [("p0.png", "Mass", "1"), ("p1.png", "No Finding", "2")])
    phantom = open_dataset(f"phantom:{tmp_path / 'ph'}", 8)
    assert phantom.pathologies == PHANTOM_PATHOLOGIES
    _chestmnist(tmp_path / "c.npz", compressed=False)
    assert len(open_dataset(f"chestmnist:{tmp_path / 'c.npz'}?split=test", 8)) == 5
    with pytest.raises(DataFormatError, match=r"unknown scheme 'mimic'.*'chestmnist'"):
        open_dataset("mimic:/x", 8)
    with pytest.raises(DataFormatError, match=r"unknown option\(s\) \['splt'\]"):
        open_dataset(f"chestmnist:{tmp_path / 'c.npz'}?splt=test", 8)


@pytest.mark.realdata
def test_real_cxr_dev_loads_as_one_dataset() -> None:
    root = SHARED_DATA / "cxr-dev"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"real data {root} not found")
    ds = read_nih_dir(root, image_size=96)
    assert len(ds) == 1088 and len(ds.pathologies) == 14
    lowres = next(i for i, p in enumerate(ds.paths) if "lowres" in p)
    for i in (0, lowres):
        item = ds[i]
        assert item["img"].shape == (1, 96, 96)
        assert 0.0 <= item["img"].min() < item["img"].max() <= 1.0
