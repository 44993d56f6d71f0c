"""MedMNIST's ChestMNIST ``.npz``: images in memory-mapped arrays, its three official splits."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrhash.data.dataset import CXRDataset, StackedArrays
from cxrhash.data.errors import DataFormatError
from cxrhash.data.labels import NIH_PATHOLOGIES
from cxrhash.data.readers.label_rows import require_nonempty
from cxrhash.data.readers.npz import npz_member

LOG = logging.getLogger(__name__)

# ChestMNIST label columns, in MedMNIST's order.
CHESTMNIST_LABELS = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]
# MedMNIST's official splits, in file order.
CHESTMNIST_SPLITS = ("train", "val", "test")
_CHESTMNIST_ID = re.compile(r"chestmnist-(train|val|test)-\d{6,}")


def chestmnist_case_id(split: str, row: int) -> str:
    """Case id of row ``row`` of ChestMNIST's official ``split`` (stable across readings)."""
    return f"chestmnist-{split}-{row:06d}"


def chestmnist_official_parts(case_ids: Sequence[str]) -> list[str] | None:
    """The official ChestMNIST split (train/val/test) of each case id, or ``None``.

    ``None`` unless every id was made by :func:`chestmnist_case_id`, so other
    datasets are never mistaken for ChestMNIST.
    """
    parts: list[str] = []
    for case_id in case_ids:
        match = _CHESTMNIST_ID.fullmatch(case_id)
        if match is None:
            return None
        parts.append(match.group(1))
    return parts


def _chestmnist_split(npz_path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×H×W, memory-mapped when stored) and N×14 MedMNIST-order labels of one split."""
    images = npz_member(npz_path, f"{split}_images")
    raw = np.asarray(npz_member(npz_path, f"{split}_labels"))
    if images.ndim != 3:
        raise DataFormatError(
            f"{npz_path}: {split}_images has shape {images.shape}; expected N×H×W grey images"
        )
    if raw.shape != (len(images), len(CHESTMNIST_LABELS)):
        raise DataFormatError(
            f"{npz_path}: {split}_labels has shape {raw.shape}; expected "
            f"({len(images)}, {len(CHESTMNIST_LABELS)})"
        )
    require_nonempty(len(images), f"{npz_path} split {split!r}")
    return images, raw


def read_chestmnist(
    npz_path: str | Path, split: str | None = None, *, image_size: int = 224
) -> CXRDataset:
    """Read MedMNIST's ChestMNIST ``.npz`` (``{split}_images``, ``{split}_labels``).

    Without ``split`` all three official splits (train, val, test) are read as
    one dataset; :func:`cxrhash.data.splits.make_split` then keeps them apart
    (train/val from MedMNIST's train/val, query/database from its test), the
    only patient-disjoint division the file allows: it holds no patient ids or
    image names, so each image is its own pseudo-patient. With ``split`` only
    that part is read, and splits made inside it cannot be patient-disjoint.

    Labels are reordered from MedMNIST's column order into :data:`NIH_PATHOLOGIES`.
    Case ids are ``chestmnist-{split}-{row:06d}`` whichever way the file is read.
    """
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise DataFormatError(f"ChestMNIST file {npz_path} not found")
    names = CHESTMNIST_SPLITS if split is None else (split,)
    arrays, labels, case_ids = [], [], []
    for name in names:
        images, raw = _chestmnist_split(npz_path, name)
        arrays.append(images)
        labels.append(raw)
        case_ids += [chestmnist_case_id(name, i) for i in range(len(images))]
    if split is not None:
        LOG.warning(
            "%s: MedMNIST has no patient ids; splits made inside its %r part cannot be "
            "patient-disjoint (read the file without ?split= to keep the official parts apart)",
            npz_path,
            split,
        )
    order = [CHESTMNIST_LABELS.index(name) for name in NIH_PATHOLOGIES]
    return CXRDataset(
        case_ids=case_ids,
        patient_ids=list(case_ids),
        labels=np.concatenate(labels)[:, order].astype(np.float32),
        pathologies=list(NIH_PATHOLOGIES),
        arrays=arrays[0] if len(arrays) == 1 else StackedArrays(arrays),
        image_size=image_size,
        name=f"{npz_path}:{split}" if split else str(npz_path),
    )
