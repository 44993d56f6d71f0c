"""A folder of PNG/JPEG/DICOM images described by a CSV of paths, findings and patients."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from cxrhash.data.dataset import CXRDataset
from cxrhash.data.errors import DataFormatError, printable_path
from cxrhash.data.label_files import iter_csv
from cxrhash.data.labels import parse_finding_labels
from cxrhash.data.readers.label_rows import (
    MISSING_SHOWN,
    LabelRow,
    Pathologies,
    cell,
    check_on_missing,
    handle_missing,
    require_nonempty,
    resolve_pathologies,
)

LOG = logging.getLogger(__name__)


def _relative_files(folder: Path) -> set[str]:
    found: set[str] = set()
    for dirpath, _, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        found.update((rel / name).as_posix() for name in filenames)
    return found


def _warn_unnameable(folder: Path, csv_path: Path, names: set[str]) -> None:
    """Warn about files whose names are not UTF-8: no row of a UTF-8 CSV can name them.

    Python lists such a name with surrogates in place of the odd bytes, so it is
    shown escaped (``\\xff``); printed raw it would crash a UTF-8 terminal or log.
    """
    unnameable = sorted(n for n in names if not _is_utf8(n))
    if unnameable:
        LOG.warning(
            "%s: %d file name(s) are not valid UTF-8, so no row of %s can name them and they "
            "are left out (rename them to include them), e.g. %s",
            printable_path(folder),
            len(unnameable),
            csv_path,
            ", ".join(printable_path(n) for n in unnameable[:MISSING_SHOWN]),
        )


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_folder(
    folder: str | Path,
    csv_path: str | Path,
    *,
    image_column: str = "path",
    label_column: str = "labels",
    patient_column: str | None = "patient_id",
    sep: str = "|",
    pathologies: Pathologies = "auto",
    image_size: int = 224,
    on_missing: str = "error",
) -> CXRDataset:
    """Read a folder of PNG/JPEG/DICOM images described by a CSV.

    Args:
        folder: Root the ``image_column`` paths are relative to.
        csv_path: One row per image.
        image_column: Relative image path.
        label_column: Findings joined by ``sep``; empty or ``No Finding`` = normal.
        patient_column: Patient id; ``None`` makes each image its own patient.
        sep: Finding separator.
        pathologies: ``"auto"`` (findings found in the CSV), ``None`` (NIH's 14) or a list.
        image_size: Output side.
        on_missing: ``"error"`` or ``"skip"`` for absent image files.
    """
    check_on_missing(on_missing)
    folder, csv_path = Path(folder), Path(csv_path)
    if not folder.is_dir():
        raise DataFormatError(f"image folder {folder} not found")
    required = (image_column, label_column, *((patient_column,) if patient_column else ()))
    rows = []
    for where, row in iter_csv(csv_path, required):
        image = Path(cell(row, image_column, where)).as_posix()
        patient = cell(row, patient_column, where) if patient_column else image
        rows.append(LabelRow(where, image, (row.get(label_column) or "").strip(), patient))
    if patient_column is None:
        LOG.warning("%s: no patient column; each image is its own patient", csv_path)
    names = resolve_pathologies(pathologies, [r.findings for r in rows], sep)
    present = _relative_files(folder)
    _warn_unnameable(folder, csv_path, present)
    handle_missing(
        [r.image for r in rows if r.image not in present], on_missing, str(csv_path), str(folder)
    )
    rows = [r for r in rows if r.image in present]
    require_nonempty(len(rows), str(csv_path))
    return CXRDataset(
        case_ids=[r.image for r in rows],
        patient_ids=[r.patient for r in rows],
        labels=np.stack([parse_finding_labels(r.findings, names, r.where, sep) for r in rows]),
        pathologies=names,
        paths=[str(folder / r.image) for r in rows],
        image_size=image_size,
        name=str(csv_path),
    )
