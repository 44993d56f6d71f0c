"""Tests for the synthetic chest-radiograph generator ``cxrhash.data.phantom``."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from cxrhash.data.phantom import (
    PHANTOM_FINDINGS,
    PhantomSample,
    anatomy,
    generate_phantom,
    load_phantom_masks,
    phantom_finding_centroids,
    write_phantom_dataset,
)

NODULE = PHANTOM_FINDINGS.index("Nodule")
MASS = PHANTOM_FINDINGS.index("Mass")
PNEUMOTHORAX = PHANTOM_FINDINGS.index("Pneumothorax")
CARDIOMEGALY = PHANTOM_FINDINGS.index("Cardiomegaly")


@pytest.fixture(scope="module")
def samples() -> list[PhantomSample]:
    return list(generate_phantom(150, 64, seed=11))


def test_findings_names_are_sorted_torchxrayvision_names() -> None:
    assert PHANTOM_FINDINGS == sorted(PHANTOM_FINDINGS)
    assert "Effusion" in PHANTOM_FINDINGS and len(PHANTOM_FINDINGS) == 6


def test_same_seed_same_images_other_seed_differs() -> None:
    first = list(generate_phantom(6, 48, seed=5))
    again = list(generate_phantom(6, 48, seed=5))
    other = list(generate_phantom(6, 48, seed=6))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert (a.case_id, a.patient_id) == (b.case_id, b.patient_id)
    assert any(not np.array_equal(a.image, c.image) for a, c in zip(first, other, strict=True))


def _digest(samples: list[PhantomSample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        for array in (s.image, s.masks, s.labels):
            h.update(np.ascontiguousarray(array).tobytes())
        h.update(f"{s.patient_id}{s.case_id}".encode())
    return h.hexdigest()


@pytest.mark.parametrize(
    ("n", "size", "kwargs", "expected"),
    [
        (6, 48, {"seed": 5}, "b592eedf90cb6629d702ece72d3e869af1483443bab286dab899e0e68aa915f2"),
        (12, 64, {"seed": 0}, "19acb4b61fdd2ec4d9674e59e66717f161e2926fa5b6db4b078913ea67f3d4d3"),
        (
            5,
            128,
            {"seed": 3, "p_normal": 0.0, "max_findings": 6},
            "fc1bbc3b8a552ae54cd1f47e5281c96e0dbbb8cb5fad69d8155f5bae81fc6169",
        ),
        (
            9,
            32,
            {"seed": 7, "n_patients": 2, "max_findings": 6, "p_normal": 0.1},
            "bcddf7c7e154d83e7121ed37532e6cb5f18c49f56befe53b846c9ff720ac22b8",
        ),
    ],
)
def test_films_of_a_seed_never_change(n: int, size: int, kwargs: dict, expected: str) -> None:
    """Images, masks, labels and ids of a seed, as generated before issue #12's refactor.

    A change of these checksums changes every phantom dataset, and the results
    computed on them: only on purpose, with the new checksums written here.
    """
    assert _digest(list(generate_phantom(n, size, **kwargs))) == expected


def test_sample_types_ids_and_shapes(samples: list[PhantomSample]) -> None:
    for i, s in enumerate(samples):
        assert s.image.shape == (64, 64) and s.image.dtype == np.uint8
        assert s.masks.shape == (6, 64, 64) and s.masks.dtype == bool
        assert s.labels.shape == (6,) and s.labels.dtype == np.float32
        assert set(np.unique(s.labels)) <= {0.0, 1.0}
        assert s.case_id == f"phantom_{i:06d}.png"
        assert s.patient_id.startswith("P") and len(s.patient_id) == 6


def test_masks_match_labels_and_stay_inside_the_image(samples: list[PhantomSample]) -> None:
    for s in samples:
        np.testing.assert_array_equal(s.masks.any(axis=(1, 2)), s.labels == 1)
        border = np.zeros((64, 64), dtype=bool)
        border[[0, -1], :] = border[:, [0, -1]] = True
        assert not (s.masks & border).any(), f"{s.case_id}: a lesion touches the image border"


def test_nodules_are_much_smaller_than_masses(samples: list[PhantomSample]) -> None:
    nodule_areas, mass_areas = [], []
    for s in samples:
        if s.labels[NODULE]:
            labelled, count = ndimage.label(s.masks[NODULE])
            nodule_areas += list(np.bincount(labelled.ravel())[1:])
        if s.labels[MASS]:
            mass_areas.append(int(s.masks[MASS].sum()))
    assert nodule_areas and mass_areas
    # A nodule has radius <= 3.5% of 64 px = 2.24 px: at most ~pi * 2.24^2 = 16 pixels.
    assert max(nodule_areas) <= 21
    assert np.median(mass_areas) > 4 * np.median(nodule_areas)


def test_nodules_are_brighter_than_the_surrounding_lung(samples: list[PhantomSample]) -> None:
    differences = []
    for s in samples:
        if not s.labels[NODULE]:
            continue
        image = s.image.astype(float)
        all_nodules = ndimage.binary_dilation(s.masks[NODULE], iterations=1)
        labelled, count = ndimage.label(s.masks[NODULE])
        for k in range(1, count + 1):
            dot = labelled == k
            ring = ndimage.binary_dilation(dot, iterations=3) & ~all_nodules
            differences.append(image[dot].mean() - image[ring].mean())
    differences = np.array(differences)
    assert len(differences) >= 10
    assert (differences > 0).mean() >= 0.95
    assert np.median(differences) > 10  # grey levels


def test_pneumothorax_is_darker_than_the_mirrored_contralateral_lung(
    samples: list[PhantomSample],
) -> None:
    checked = 0
    for s in samples:
        if not s.labels[PNEUMOTHORAX]:
            continue
        gap = s.masks[PNEUMOTHORAX]
        mirrored = gap[:, ::-1] & ~gap
        image = s.image.astype(float)
        assert image[gap].mean() < image[mirrored].mean(), s.case_id
        checked += 1
    assert checked >= 5


def test_cardiomegaly_heart_gives_cardiothoracic_ratio_above_055() -> None:
    size = 256
    for j in range(10):
        patient = anatomy.build_patient(np.random.default_rng([3, 1, j]), size, 4)
        a = patient.anatomy
        lungs = patient.lungs[0] | patient.lungs[1]
        lung_cols = np.flatnonzero(lungs.any(axis=0))
        thorax = lung_cols[-1] - lung_cols[0] + 1

        def ratio(heart: np.ndarray, thorax: int = thorax) -> float:
            cols = np.flatnonzero(heart.any(axis=0))
            return (cols[-1] - cols[0] + 1) / thorax

        assert 0.41 <= ratio(patient.heart) <= 0.49
        enlarged = anatomy.heart_mask(a, patient.x, patient.y, 0.57)
        assert ratio(enlarged) > 0.55
        assert enlarged.sum() > patient.heart.sum()


def test_label_frequencies_over_500_images() -> None:
    labels = np.stack([s.labels for s in generate_phantom(500, 32, seed=2)])
    frequencies = labels.mean(axis=0)
    assert ((frequencies >= 0.08) & (frequencies <= 0.40)).all(), frequencies
    assert abs((labels.sum(axis=1) == 0).mean() - 0.35) <= 0.08
    assert (labels.sum(axis=1) >= 2).sum() >= 25
    assert labels.sum(axis=1).max() <= 3


def test_p_normal_and_max_findings_are_honoured() -> None:
    labels = np.stack([s.labels for s in generate_phantom(60, 32, p_normal=0.0, max_findings=1)])
    np.testing.assert_array_equal(labels.sum(axis=1), np.ones(60))


def test_patients_have_one_to_five_images_and_share_anatomy() -> None:
    samples = list(generate_phantom(200, 32, seed=4, p_normal=1.0))
    patients = [s.patient_id for s in samples]
    _, counts = np.unique(patients, return_counts=True)
    assert len(counts) == 80  # round(200 / 2.5)
    assert counts.min() >= 1 and counts.max() <= 5 and (counts >= 2).sum() >= 40
    assert patients == sorted(patients)  # one patient's films are consecutive

    # Normal films of one patient correlate more than films of different patients.
    features = np.stack([s.image.astype(float).ravel() for s in samples])
    features = (features - features.mean(1, keepdims=True)) / features.std(1, keepdims=True)
    corr = features @ features.T / features.shape[1]
    same = np.equal.outer(patients, patients) & ~np.eye(len(patients), dtype=bool)
    different = ~np.equal.outer(patients, patients)
    assert corr[same].mean() > corr[different].mean() + 0.02


def test_n_patients_is_honoured() -> None:
    samples = list(generate_phantom(10, 32, n_patients=2))
    assert [s.patient_id for s in samples] == ["P00000"] * 5 + ["P00001"] * 5


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": -1}, "n"),
        ({"n": 4, "size": 16}, "size"),
        ({"n": 4, "p_normal": 1.5}, "p_normal"),
        ({"n": 4, "max_findings": 0}, "max_findings"),
        ({"n": 11, "n_patients": 2}, "n_patients"),
        ({"n": 3, "n_patients": 4}, "n_patients"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        list(generate_phantom(**kwargs))


def test_centroid_of_a_hand_made_mask() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 6:8] = True  # rows 2,3,4 and cols 6,7
    assert phantom_finding_centroids(mask) == (3.0, 6.5)
    with pytest.raises(ValueError, match="empty"):
        phantom_finding_centroids(np.zeros((4, 4), dtype=bool))


def test_write_phantom_dataset_round_trips(tmp_path: Path) -> None:
    out = write_phantom_dataset(tmp_path / "ph", 12, 48, seed=9)
    expected = list(generate_phantom(12, 48, seed=9))
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"Image Index", "Finding Labels", "Patient ID"} <= set(rows[0])
    assert len(rows) == 12
    for row, sample in zip(rows, expected, strict=True):
        names = [n for n, v in zip(PHANTOM_FINDINGS, sample.labels, strict=True) if v]
        assert row["Image Index"] == sample.case_id
        assert row["Patient ID"] == sample.patient_id
        assert row["Finding Labels"] == ("|".join(names) if names else "No Finding")
        with Image.open(out / "images" / row["Image Index"]) as img:
            assert img.size == (48, 48) and img.mode == "L"
            np.testing.assert_array_equal(np.asarray(img), sample.image)
    case_ids, masks = load_phantom_masks(out)
    assert case_ids == [s.case_id for s in expected]
    assert masks.shape == (12, 6, 48, 48) and masks.dtype == bool
    np.testing.assert_array_equal(masks, np.stack([s.masks for s in expected]))
    assert sorted(p.name for p in out.iterdir()) == ["images", "labels.csv", "masks.npz"]


def test_the_written_labels_and_masks_never_change(tmp_path: Path) -> None:
    out = write_phantom_dataset(tmp_path / "ph", 12, 48, seed=9)
    csv_digest = hashlib.sha256((out / "labels.csv").read_bytes()).hexdigest()
    assert csv_digest == "f1d1324571b4a8768ed56dc47a17159d528e4012d36133c4f2209a18d5c6f6c6"
    _, masks = load_phantom_masks(out)
    masks_digest = hashlib.sha256(masks.tobytes()).hexdigest()
    assert masks_digest == "7fe4925590a04357718db67ba49035314a5b01bbf8a034e63c6879bc48aafa1f"


def test_findings_are_learnable_from_16x16_pixels() -> None:
    samples = list(generate_phantom(600, 64, seed=0))
    images = np.stack([s.image for s in samples]).astype(np.float32) / 255.0
    labels = np.stack([s.labels for s in samples])
    blocks = images.reshape(-1, 16, 4, 16, 4)
    # Two 16×16 downsamplings: block mean (extended opacities) and block max (small bright dots).
    features = np.concatenate([blocks.mean(axis=(2, 4)), blocks.max(axis=(2, 4))], axis=1)
    features = features.reshape(len(samples), -1)
    features = (features - features[:400].mean(0)) / (features[:400].std(0) + 1e-6)
    for f, name in enumerate(PHANTOM_FINDINGS):
        model = LogisticRegression(C=0.05, max_iter=3000).fit(features[:400], labels[:400, f])
        auc = roc_auc_score(labels[400:, f], model.decision_function(features[400:]))
        assert auc > 0.6, f"{name}: held-out ROC AUC {auc:.3f}"
