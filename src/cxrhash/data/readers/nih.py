"""NIH ChestX-ray14 label files (``Data_Entry_2017.csv`` and CSVs in its format)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from cxrhash.data.dataset import CXRDataset, concat_datasets
from cxrhash.data.errors import DataFormatError
from cxrhash.data.label_files import iter_csv, read_name_lines
from cxrhash.data.labels import parse_finding_labels
from cxrhash.data.readers.label_rows import (
    LabelRow,
    Pathologies,
    cell,
    check_on_missing,
    handle_missing,
    require_nonempty,
    resolve_pathologies,
)

LOG = logging.getLogger(__name__)

NIH_LABEL_FILES = ("labels.csv", "Data_Entry_2017.csv")
NIH_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")


def _read_nih_rows(csv_path: Path) -> list[LabelRow]:
    rows = []
    for where, row in iter_csv(csv_path, NIH_COLUMNS):
        rows.append(
            LabelRow(
                where=where,
                image=cell(row, "Image Index", where),
                findings=(row.get("Finding Labels") or "").strip(),
                patient=cell(row, "Patient ID", where),
            )
        )
    return rows


def _scan_files(folders: list[Path]) -> dict[str, str]:
    """File name → path over ``folders`` (first folder wins), one listing per folder."""
    found: dict[str, str] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file() and entry.name not in found:
                    found[entry.name] = entry.path
    return found


def _nih_image_folders(csv_path: Path, image_dirs: list[Path] | Path | None) -> list[Path]:
    """Folders to search: the given ones (default: the CSV's folder and NIH's
    ``images_NNN`` folders next to it), each also with its ``images/`` subfolder."""
    if image_dirs is None:
        base = csv_path.parent
        dirs = [base, *sorted(p for p in base.glob("images_*") if p.is_dir())]
    elif isinstance(image_dirs, (str, Path)):
        dirs = [Path(image_dirs)]
    else:
        dirs = [Path(d) for d in image_dirs]
    folders: list[Path] = []
    for d in dirs:
        for folder in (d, d / "images"):
            if folder not in folders:
                folders.append(folder)
    return folders


def _official_names(list_path: Path) -> set[str]:
    if not list_path.is_file():
        raise DataFormatError(f"official split list {list_path} not found")
    return read_name_lines(list_path)


def _build_nih(
    csv_path: Path,
    rows: list[LabelRow],
    pathologies: list[str],
    image_dirs: list[Path] | Path | None,
    image_size: int,
    official_split: Path | None,
    on_missing: str,
) -> CXRDataset:
    if official_split is not None:
        keep = _official_names(Path(official_split))
        before = len(rows)
        rows = [r for r in rows if r.image in keep]
        LOG.info(
            "%s: official split %s keeps %d of %d", csv_path, official_split, len(rows), before
        )
    folders = _nih_image_folders(csv_path, image_dirs)
    files = _scan_files(folders)
    missing = [r.image for r in rows if r.image not in files]
    handle_missing(missing, on_missing, str(csv_path), ", ".join(map(str, folders)))
    rows = [r for r in rows if r.image in files]
    require_nonempty(len(rows), str(csv_path))
    labels = np.stack([parse_finding_labels(r.findings, pathologies, r.where) for r in rows])
    return CXRDataset(
        case_ids=[r.image for r in rows],
        patient_ids=[r.patient for r in rows],
        labels=labels,
        pathologies=pathologies,
        paths=[files[r.image] for r in rows],
        image_size=image_size,
        name=str(csv_path),
    )


def read_nih(
    csv_path: str | Path,
    image_dirs: list[Path] | Path | None = None,
    *,
    image_size: int = 224,
    official_split: Path | None = None,
    on_missing: str = "error",
    pathologies: Pathologies = None,
) -> CXRDataset:
    """Read an NIH ChestX-ray14-format CSV (``Image Index``, ``Finding Labels``, ``Patient ID``).

    Args:
        csv_path: ``Data_Entry_2017.csv`` or a CSV in the same format.
        image_dirs: Folders holding the images (each also searched in its
            ``images/`` subfolder). Default: the CSV's folder and its
            ``images_NNN`` siblings.
        image_size: Output side of the dataset's images.
        official_split: ``train_val_list.txt`` / ``test_list.txt``: keep only listed images.
        on_missing: ``"error"`` or ``"skip"`` for rows whose image file is absent.
        pathologies: Column names; ``None`` = the 14 NIH findings, ``"auto"`` =
            the sorted findings that occur in the CSV.

    Raises:
        DataFormatError: A required column is missing, images are missing
            (with ``on_missing="error"``), or nothing is left.
        LabelError: A finding is not among ``pathologies``.
    """
    check_on_missing(on_missing)
    csv_path = Path(csv_path)
    rows = _read_nih_rows(csv_path)
    names = resolve_pathologies(pathologies, [r.findings for r in rows])
    return _build_nih(csv_path, rows, names, image_dirs, image_size, official_split, on_missing)


def find_nih_label_files(root: str | Path, max_depth: int = 2) -> list[Path]:
    """Every ``labels.csv`` / ``Data_Entry_2017.csv`` under ``root`` up to ``max_depth`` levels."""
    root = Path(root)
    found: list[Path] = []
    level = [root]
    for _ in range(max_depth + 1):
        next_level: list[Path] = []
        for folder in level:
            found.extend(folder / n for n in NIH_LABEL_FILES if (folder / n).is_file())
            next_level.extend(sorted(p for p in folder.iterdir() if p.is_dir()))
        level = next_level
    return found


def read_nih_dir(
    root: str | Path,
    *,
    image_size: int = 224,
    official_split: Path | None = None,
    on_missing: str = "error",
    pathologies: Pathologies = None,
) -> CXRDataset:
    """Read every NIH-format label file under ``root`` (depth ≤ 2) as one dataset.

    Each CSV's images are looked up in its own folder and ``images/``
    subfolder. With ``pathologies="auto"`` all CSVs share the union of their
    findings.

    Raises:
        DataFormatError: No label file under ``root``, or a case id occurs in
            two CSVs.
    """
    check_on_missing(on_missing)
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root} is not a directory")
    csv_paths = find_nih_label_files(root)
    if not csv_paths:
        raise DataFormatError(
            f"no NIH label file ({' or '.join(NIH_LABEL_FILES)}) found under {root} (depth ≤ 2)"
        )
    tables = [(p, _read_nih_rows(p)) for p in csv_paths]
    names = resolve_pathologies(pathologies, [r.findings for _, rows in tables for r in rows])
    parts = [
        _build_nih(p, rows, names, None, image_size, official_split, on_missing)
        for p, rows in tables
    ]
    LOG.info("%s: %s", root, ", ".join(f"{d.name}: {len(d)}" for d in parts))
    return parts[0] if len(parts) == 1 else concat_datasets(parts, name=str(root))
