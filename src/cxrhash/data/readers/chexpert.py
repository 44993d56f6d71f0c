"""CheXpert label files (``train.csv`` / ``valid.csv``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cxrhash.data.dataset import CXRDataset
from cxrhash.data.errors import DataFormatError
from cxrhash.data.label_files import iter_csv
from cxrhash.data.labels import CHEXPERT_PATHOLOGIES
from cxrhash.data.readers.label_rows import cell, require_nonempty

UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")
_CHEXPERT_PATIENT = re.compile(r"(patient\d+)")


def _chexpert_value(text: str, uncertain: str, where: str, column: str) -> float:
    text = text.strip()
    if not text:
        return float("nan")
    try:
        value = float(text)
    except ValueError as err:
        raise DataFormatError(
            f"{where}: column {column!r} holds {text!r}; expected 1, 0, -1 or blank"
        ) from err
    if value == -1.0:
        return {"ones": 1.0, "zeros": 0.0, "ignore": float("nan")}[uncertain]
    if value not in (0.0, 1.0):
        raise DataFormatError(
            f"{where}: column {column!r} holds {text!r}; expected 1, 0, -1 or blank"
        )
    return value


def _chexpert_base(csv_path: Path, root: Path | None, first: str) -> Path:
    base = root if root is not None else csv_path.parent
    for candidate in (base, base.parent):
        if (candidate / first).is_file():
            return candidate
    raise DataFormatError(
        f"{csv_path}: first image {first!r} found neither under {base} nor under {base.parent}; "
        "pass root= the folder that contains the CSV's 'Path' entries"
    )


def read_chexpert(
    csv_path: str | Path,
    root: Path | None = None,
    *,
    uncertain: str = "ones",
    image_size: int = 224,
    frontal_only: bool = False,
) -> CXRDataset:
    """Read CheXpert's ``train.csv``/``valid.csv``.

    Observation cells: 1 → 1, 0 → 0, blank → NaN (unmentioned = unknown, as in
    torchxrayvision), −1 (uncertain) → 1 / 0 / NaN for ``uncertain`` =
    ``"ones"`` / ``"zeros"`` / ``"ignore"``. ``No Finding`` is dropped (it is
    derived later). The patient id is parsed from the path (``patient00001``);
    the case id is the ``Path`` cell. Image paths are resolved against
    ``root`` (default: the CSV's folder), or its parent, whichever holds the
    first image; missing files surface later as skipped samples.

    Raises:
        DataFormatError: A required column is missing, a cell is not 1/0/−1/blank,
            a path has no patient id, or nothing is left.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    csv_path = Path(csv_path)
    columns = {
        "Pleural Effusion" if name == "Effusion" else name: name for name in CHEXPERT_PATHOLOGIES
    }
    required = ("Path", *columns, *(("Frontal/Lateral",) if frontal_only else ()))
    case_ids: list[str] = []
    patients: list[str] = []
    labels: list[list[float]] = []
    for where, row in iter_csv(csv_path, required):
        if frontal_only and (row.get("Frontal/Lateral") or "").strip() != "Frontal":
            continue
        path = cell(row, "Path", where)
        match = _CHEXPERT_PATIENT.search(path)
        if match is None:
            raise DataFormatError(f"{where}: Path {path!r} holds no 'patientNNNNN' part")
        case_ids.append(path)
        patients.append(match.group(1))
        labels.append([_chexpert_value(row[c] or "", uncertain, where, c) for c in columns])
    require_nonempty(len(case_ids), str(csv_path))
    base = _chexpert_base(csv_path, root, case_ids[0])
    return CXRDataset(
        case_ids=case_ids,
        patient_ids=patients,
        labels=np.asarray(labels, dtype=np.float32),
        pathologies=list(CHEXPERT_PATHOLOGIES),
        paths=[str(base / p) for p in case_ids],
        image_size=image_size,
        name=str(csv_path),
    )
