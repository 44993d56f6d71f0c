"""Patient-disjoint splits (SPEC §6), saved as case ids so they survive reloading."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrhash.data.readers.chestmnist import CHESTMNIST_SPLITS, chestmnist_official_parts

LOG = logging.getLogger(__name__)

SPLIT_FORMAT_VERSION = 1


class SplitError(ValueError):
    """A split cannot be made, or a saved split does not fit the data."""


def patient_disjoint_split(
    patient_ids: Sequence[str], fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Assign whole patients to named parts so each part's image share ≈ its fraction.

    Patients (sorted, then shuffled with ``np.random.default_rng(seed)``) go one
    by one to the part furthest below its target image count; ties go to the
    part listed first. No patient appears in two parts.

    Args:
        patient_ids: Patient of each image.
        fractions: Part name → share of images, e.g. ``{"train": 0.6, "val": 0.1,
            "query": 0.1, "database": 0.2}``; positive, summing to 1.
        seed: Seed of the shuffle; the same ids and seed give the same split.

    Returns:
        Part name → sorted int64 image indices; every index in exactly one part.

    Raises:
        SplitError: Bad fractions, or a part ends up empty.
    """
    if not fractions:
        raise SplitError("fractions are empty; expected e.g. {'train': 0.7, 'test': 0.3}")
    bad = {name: f for name, f in fractions.items() if not f > 0}
    if bad:
        raise SplitError(f"fractions must be positive, got {bad}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise SplitError(f"fractions must sum to 1, got {total:g} for {fractions}")

    patients = np.asarray([str(p) for p in patient_ids])
    unique, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    names = list(fractions)
    targets = np.array([fractions[n] for n in names]) * len(patients)
    filled = np.zeros(len(names))
    part_of_patient = np.empty(len(unique), dtype=np.int64)
    for patient in order:
        part = int(np.argmax(targets - filled))
        part_of_patient[patient] = part
        filled[part] += counts[patient]

    part_of_image = part_of_patient[inverse]
    split = {name: np.flatnonzero(part_of_image == k) for k, name in enumerate(names)}
    for name, idx in split.items():
        if len(idx) == 0:
            raise SplitError(
                f"part {name!r} is empty: {len(unique)} patients ({len(patients)} images) are "
                f"too few for fractions {fractions}"
            )
    LOG.info(
        "split of %d images / %d patients: %s",
        len(patients),
        len(unique),
        ", ".join(f"{n}={len(i)}" for n, i in split.items()),
    )
    return split


def save_split(
    path: str | Path,
    split: dict[str, np.ndarray],
    case_ids: Sequence[str],
    meta: dict | None = None,
) -> None:
    """Write a split as JSON listing case ids (not indices) per part.

    Args:
        path: Output ``.json``.
        split: Part name → indices into ``case_ids``.
        case_ids: The dataset's case ids.
        meta: Extra facts to keep with it (seed, fractions, dataset spec).
    """
    doc = {
        "version": SPLIT_FORMAT_VERSION,
        "meta": meta or {},
        "parts": {name: [case_ids[int(i)] for i in idx] for name, idx in split.items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))


def load_split(path: str | Path, case_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Read a split saved by :func:`save_split` and map it onto ``case_ids``.

    Returns:
        Part name → sorted int64 indices into ``case_ids``.

    Raises:
        SplitError: The file is malformed, names case ids absent from the data,
            or puts one case id in two parts.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        parts: dict[str, list[str]] = doc["parts"]
    except FileNotFoundError as err:
        raise SplitError(f"split file {path} not found") from err
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SplitError(f"{path}: not a split file (expected JSON with 'parts'): {err}") from err
    index = {case_id: i for i, case_id in enumerate(case_ids)}
    seen: dict[str, str] = {}
    split: dict[str, np.ndarray] = {}
    for name, ids in parts.items():
        absent = [c for c in ids if c not in index]
        if absent:
            raise SplitError(
                f"{path}: part {name!r} lists {len(absent)} case id(s) absent from the data, "
                f"e.g. {absent[:5]}; the split was made on a different dataset"
            )
        for c in ids:
            if c in seen:
                raise SplitError(f"{path}: case id {c!r} is in both {seen[c]!r} and {name!r}")
            seen[c] = name
        split[name] = np.sort(np.array([index[c] for c in ids], dtype=np.int64))
    if len(seen) < len(index):
        LOG.info("%s: %d of %d items are in no part", path, len(index) - len(seen), len(index))
    return split


def read_name_list(path: Path) -> set[str]:
    """Image names of an NIH list file (``train_val_list.txt`` / ``test_list.txt``)."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"official split list {path} not found")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def official_nih_split(
    case_ids: Sequence[str],
    patient_ids: Sequence[str],
    lists_dir: Path,
    fractions: dict[str, float],
    seed: int,
) -> dict[str, np.ndarray]:
    """NIH's own patient-disjoint split: train/val from ``train_val_list.txt``,
    query/database from ``test_list.txt``.

    Within each list, patients are divided by :func:`patient_disjoint_split` with
    the relative fractions of its two parts (e.g. train 0.6 : val 0.1). Images in
    neither list are left out (logged).

    Raises:
        SplitError: A list file is missing, or a part ends up empty.
    """
    lists_dir = Path(lists_dir)
    train_val = read_name_list(lists_dir / "train_val_list.txt")
    test = read_name_list(lists_dir / "test_list.txt")
    names = [Path(c).name for c in case_ids]
    groups = {
        ("train", "val"): np.array([i for i, n in enumerate(names) if n in train_val], np.int64),
        ("query", "database"): np.array([i for i, n in enumerate(names) if n in test], np.int64),
    }
    unlisted = len(names) - sum(len(v) for v in groups.values())
    if unlisted:
        LOG.warning("%d images are in neither official list and are left out", unlisted)
    out: dict[str, np.ndarray] = {}
    for (a, b), rows in groups.items():
        if len(rows) == 0:
            raise SplitError(f"no image of the dataset is in the official list for {a}/{b}")
        fa, fb = fractions.get(a, 0.5), fractions.get(b, 0.5)
        parts = patient_disjoint_split(
            [patient_ids[i] for i in rows], {a: fa / (fa + fb), b: fb / (fa + fb)}, seed
        )
        out[a], out[b] = np.sort(rows[parts[a]]), np.sort(rows[parts[b]])
    return out


def official_chestmnist_split(
    case_ids: Sequence[str],
    patient_ids: Sequence[str],
    fractions: dict[str, float],
    seed: int,
) -> dict[str, np.ndarray]:
    """ChestMNIST's official parts kept apart: train = its train, val = its val,
    query/database = its test, divided by :func:`patient_disjoint_split` with the
    relative fractions of those two parts.

    MedMNIST calls its train/val/test "the official data split" of NIH
    ChestX-ray14 and stores no patient ids, so the official parts are the only
    patient partition there is: training never sees a test patient. Within the
    test part each image is its own pseudo-patient, so query and database may
    share patients; the train and val fractions are not used.

    Raises:
        SplitError: The case ids are not ChestMNIST's, or an official part is empty.
    """
    official = chestmnist_official_parts(case_ids)
    if official is None:
        raise SplitError("not ChestMNIST case ids (expected chestmnist-{train,val,test}-NNNNNN)")
    rows = {name: np.flatnonzero(np.asarray(official) == name) for name in CHESTMNIST_SPLITS}
    empty = [name for name, idx in rows.items() if len(idx) == 0]
    if empty:
        raise SplitError(
            f"ChestMNIST official part(s) {empty} hold no image; read the .npz without "
            "?split= so train, val and test are all present"
        )
    fq, fd = fractions.get("query", 0.5), fractions.get("database", 0.5)
    test = rows["test"]
    shares = {"query": fq / (fq + fd), "database": fd / (fq + fd)}
    parts = patient_disjoint_split([patient_ids[int(i)] for i in test], shares, seed)
    LOG.info(
        "ChestMNIST official split: train %d, val %d, test %d → query %d + database %d",
        len(rows["train"]),
        len(rows["val"]),
        len(test),
        len(parts["query"]),
        len(parts["database"]),
    )
    return {
        "train": rows["train"],
        "val": rows["val"],
        "query": np.sort(test[parts["query"]]),
        "database": np.sort(test[parts["database"]]),
    }


def make_split(
    case_ids: Sequence[str],
    patient_ids: Sequence[str],
    fractions: dict[str, float],
    seed: int,
    official_lists: Path | None = None,
) -> dict[str, np.ndarray]:
    """The split a run uses: the dataset's official patient-disjoint parts where it has them.

    * ``official_lists`` (NIH's ``train_val_list.txt``/``test_list.txt``
      folder, ``--official-split``): :func:`official_nih_split`;
    * ChestMNIST read with more than one official part: :func:`official_chestmnist_split`;
    * otherwise :func:`patient_disjoint_split` on the patient ids.
    """
    if official_lists is not None:
        return official_nih_split(case_ids, patient_ids, official_lists, fractions, seed)
    official = chestmnist_official_parts(case_ids)
    if official is not None and len(set(official)) > 1:
        return official_chestmnist_split(case_ids, patient_ids, fractions, seed)
    return patient_disjoint_split(patient_ids, fractions, seed)
