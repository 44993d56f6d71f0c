"""Readers for the dataset formats of SPEC §7; each returns a lazy :class:`CXRDataset`.

No reader decodes images: they parse label files and locate image files.
``open_dataset`` parses the CLI's ``--data SCHEME:PATH[?key=value&...]`` spec.
"""

from __future__ import annotations

import logging
import math
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from cxrhash.data.dataset import CXRDataset, DataFormatError, StackedArrays, concat_datasets
from cxrhash.data.images import printable_path
from cxrhash.data.label_files import iter_csv as _iter_csv
from cxrhash.data.label_files import read_name_lines
from cxrhash.data.labels import (
    CHEXPERT_PATHOLOGIES,
    NIH_PATHOLOGIES,
    NO_FINDING,
    PHANTOM_PATHOLOGIES,
    normalize_label,
    parse_finding_labels,
)

LOG = logging.getLogger(__name__)

NIH_LABEL_FILES = ("labels.csv", "Data_Entry_2017.csv")
NIH_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
ON_MISSING = ("error", "skip")
UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")
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
_CHEXPERT_PATIENT = re.compile(r"(patient\d+)")
_MISSING_SHOWN = 5

Pathologies = list[str] | str | None


# --------------------------------------------------------------------------- CSV helpers


@dataclass
class _Row:
    where: str
    image: str
    findings: str
    patient: str


def _cell(row: dict[str, str], column: str, where: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise DataFormatError(f"{where}: empty {column!r} cell; expected a value")
    return value


def _read_nih_rows(csv_path: Path) -> list[_Row]:
    rows = []
    for where, row in _iter_csv(csv_path, NIH_COLUMNS):
        rows.append(
            _Row(
                where=where,
                image=_cell(row, "Image Index", where),
                findings=(row.get("Finding Labels") or "").strip(),
                patient=_cell(row, "Patient ID", where),
            )
        )
    return rows


def _found_labels(texts: list[str], sep: str = "|") -> list[str]:
    names = {normalize_label(t) for text in texts for t in text.split(sep) if t.strip()}
    return sorted(names - {NO_FINDING})


def _resolve_pathologies(pathologies: Pathologies, texts: list[str], sep: str = "|") -> list[str]:
    if pathologies is None:
        return list(NIH_PATHOLOGIES)
    if isinstance(pathologies, str):
        if pathologies != "auto":
            raise ValueError(f"pathologies must be a list, None or 'auto', got {pathologies!r}")
        return _found_labels(texts, sep)
    return [normalize_label(p) for p in pathologies]


def _require_nonempty(n: int, source: str) -> None:
    if n == 0:
        raise DataFormatError(f"{source}: no items left after filtering; expected at least one")


# --------------------------------------------------------------------------- image lookup


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


def _handle_missing(missing: list[str], on_missing: str, source: str, looked_in: str) -> None:
    if not missing:
        return
    if on_missing == "error":
        raise DataFormatError(
            f"{source}: {len(missing)} image file(s) not found, e.g. {missing[:_MISSING_SHOWN]}; "
            f"looked in {looked_in} (pass on_missing='skip' to drop them)"
        )
    LOG.warning("%s: %d image file(s) not found; dropping them", source, len(missing))


def _check_on_missing(on_missing: str) -> None:
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")


# --------------------------------------------------------------------------- NIH


def _official_names(list_path: Path) -> set[str]:
    if not list_path.is_file():
        raise DataFormatError(f"official split list {list_path} not found")
    return read_name_lines(list_path)


def _build_nih(
    csv_path: Path,
    rows: list[_Row],
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
    _handle_missing(missing, on_missing, str(csv_path), ", ".join(map(str, folders)))
    rows = [r for r in rows if r.image in files]
    _require_nonempty(len(rows), str(csv_path))
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
    _check_on_missing(on_missing)
    csv_path = Path(csv_path)
    rows = _read_nih_rows(csv_path)
    names = _resolve_pathologies(pathologies, [r.findings for r in rows])
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
    _check_on_missing(on_missing)
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root} is not a directory")
    csv_paths = find_nih_label_files(root)
    if not csv_paths:
        raise DataFormatError(
            f"no NIH label file ({' or '.join(NIH_LABEL_FILES)}) found under {root} (depth ≤ 2)"
        )
    tables = [(p, _read_nih_rows(p)) for p in csv_paths]
    names = _resolve_pathologies(pathologies, [r.findings for _, rows in tables for r in rows])
    parts = [
        _build_nih(p, rows, names, None, image_size, official_split, on_missing)
        for p, rows in tables
    ]
    LOG.info("%s: %s", root, ", ".join(f"{d.name}: {len(d)}" for d in parts))
    return parts[0] if len(parts) == 1 else concat_datasets(parts, name=str(root))


# --------------------------------------------------------------------------- CheXpert


def _chexpert_value(cell: str, uncertain: str, where: str, column: str) -> float:
    cell = cell.strip()
    if not cell:
        return float("nan")
    try:
        value = float(cell)
    except ValueError as err:
        raise DataFormatError(
            f"{where}: column {column!r} holds {cell!r}; expected 1, 0, -1 or blank"
        ) from err
    if value == -1.0:
        return {"ones": 1.0, "zeros": 0.0, "ignore": float("nan")}[uncertain]
    if value not in (0.0, 1.0):
        raise DataFormatError(
            f"{where}: column {column!r} holds {cell!r}; expected 1, 0, -1 or blank"
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
    for where, row in _iter_csv(csv_path, required):
        if frontal_only and (row.get("Frontal/Lateral") or "").strip() != "Frontal":
            continue
        path = _cell(row, "Path", where)
        match = _CHEXPERT_PATIENT.search(path)
        if match is None:
            raise DataFormatError(f"{where}: Path {path!r} holds no 'patientNNNNN' part")
        case_ids.append(path)
        patients.append(match.group(1))
        labels.append([_chexpert_value(row[c] or "", uncertain, where, c) for c in columns])
    _require_nonempty(len(case_ids), str(csv_path))
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


# --------------------------------------------------------------------------- ChestMNIST


_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _memmap_stored(npz_path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """Memory-map an uncompressed ``.npz`` member, or ``None`` if it cannot be."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with npz_path.open("rb") as handle:
        # Zip local file header: 30 fixed bytes, then the name and extra field.
        handle.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(handle.read(4), dtype="<u2")
        handle.seek(info.header_offset + 30 + int(name_len) + int(extra_len))
        read_header = _NPY_HEADER_READERS.get(np.lib.format.read_magic(handle))
        if read_header is None:
            return None
        shape, fortran_order, dtype = read_header(handle)
        offset = handle.tell()
    if fortran_order or dtype.hasobject:
        return None
    return np.memmap(npz_path, dtype=dtype, mode="r", shape=shape, offset=offset)


def _npz_member(npz_path: Path, key: str) -> np.ndarray:
    """One array of an ``.npz``: memory-mapped when stored uncompressed, else loaded."""
    try:
        return _npz_array(npz_path, key)
    except DataFormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise DataFormatError(
            f"{npz_path}: not a MedMNIST .npz file; expected a zip archive of .npy arrays "
            f"such as chestmnist.npz ({err})"
        ) from err
    except (ValueError, OSError, EOFError, zlib.error) as err:
        raise DataFormatError(f"{npz_path}: cannot read the array {key!r} ({err})") from err


def _npz_array(npz_path: Path, key: str) -> np.ndarray:
    member = f"{key}.npy"
    with zipfile.ZipFile(npz_path) as archive:
        names = archive.namelist()
        if member not in names:
            keys = sorted(n.removesuffix(".npy") for n in names)
            raise DataFormatError(f"{npz_path}: no array {key!r}; the file has {keys}")
        mapped = _memmap_stored(npz_path, archive.getinfo(member))
        if mapped is not None:
            return mapped
        info = archive.getinfo(member)
        LOG.info("%s: %s is compressed; loading it into memory", npz_path, key)
        with archive.open(member) as handle:
            read_header = _NPY_HEADER_READERS.get(np.lib.format.read_magic(handle))
            if read_header is None:
                raise DataFormatError(f"{npz_path}: {member} is not a .npy array")
            shape, fortran_order, dtype = read_header(handle)
            # numpy allocates what the header declares before reading: check it first.
            declared = math.prod(shape) * dtype.itemsize
            if dtype.hasobject or declared > info.file_size:
                raise DataFormatError(
                    f"{npz_path}: {member} declares {declared:,} bytes of {dtype} in shape "
                    f"{shape}, but holds {info.file_size:,}; not a MedMNIST array"
                )
            count = math.prod(shape)
            data = np.frombuffer(handle.read(declared), dtype=dtype, count=count)
            return data.reshape(shape, order="F" if fortran_order else "C")


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
    images = _npz_member(npz_path, f"{split}_images")
    raw = np.asarray(_npz_member(npz_path, f"{split}_labels"))
    if images.ndim != 3:
        raise DataFormatError(
            f"{npz_path}: {split}_images has shape {images.shape}; expected N×H×W grey images"
        )
    if raw.shape != (len(images), len(CHESTMNIST_LABELS)):
        raise DataFormatError(
            f"{npz_path}: {split}_labels has shape {raw.shape}; expected "
            f"({len(images)}, {len(CHESTMNIST_LABELS)})"
        )
    _require_nonempty(len(images), f"{npz_path} split {split!r}")
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


# --------------------------------------------------------------------------- folder + CSV


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
            ", ".join(printable_path(n) for n in unnameable[:_MISSING_SHOWN]),
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
    _check_on_missing(on_missing)
    folder, csv_path = Path(folder), Path(csv_path)
    if not folder.is_dir():
        raise DataFormatError(f"image folder {folder} not found")
    required = (image_column, label_column, *((patient_column,) if patient_column else ()))
    rows = []
    for where, row in _iter_csv(csv_path, required):
        image = Path(_cell(row, image_column, where)).as_posix()
        patient = _cell(row, patient_column, where) if patient_column else image
        rows.append(_Row(where, image, (row.get(label_column) or "").strip(), patient))
    if patient_column is None:
        LOG.warning("%s: no patient column; each image is its own patient", csv_path)
    names = _resolve_pathologies(pathologies, [r.findings for r in rows], sep)
    present = _relative_files(folder)
    _warn_unnameable(folder, csv_path, present)
    _handle_missing(
        [r.image for r in rows if r.image not in present], on_missing, str(csv_path), str(folder)
    )
    rows = [r for r in rows if r.image in present]
    _require_nonempty(len(rows), str(csv_path))
    return CXRDataset(
        case_ids=[r.image for r in rows],
        patient_ids=[r.patient for r in rows],
        labels=np.stack([parse_finding_labels(r.findings, names, r.where, sep) for r in rows]),
        pathologies=names,
        paths=[str(folder / r.image) for r in rows],
        image_size=image_size,
        name=str(csv_path),
    )


# --------------------------------------------------------------------------- CLI specs


def _open_nih(path: Path, opts: dict[str, str], size: int) -> CXRDataset:
    kwargs: dict = {"image_size": size, "on_missing": opts.get("on_missing", "error")}
    if "official_split" in opts:
        kwargs["official_split"] = Path(opts["official_split"])
    if "pathologies" in opts:
        value = opts["pathologies"]
        kwargs["pathologies"] = "auto" if value == "auto" else value.split(",")
    return read_nih_dir(path, **kwargs) if path.is_dir() else read_nih(path, **kwargs)


def _open_chexpert(path: Path, opts: dict[str, str], size: int) -> CXRDataset:
    return read_chexpert(
        path,
        Path(opts["root"]) if "root" in opts else None,
        uncertain=opts.get("uncertain", "ones"),
        frontal_only=opts.get("frontal_only", "false").lower() in ("1", "true", "yes"),
        image_size=size,
    )


def _open_chestmnist(path: Path, opts: dict[str, str], size: int) -> CXRDataset:
    return read_chestmnist(path, opts.get("split") or None, image_size=size)


def _open_folder(path: Path, opts: dict[str, str], size: int) -> CXRDataset:
    if "csv" not in opts:
        raise DataFormatError(f"folder:{path} needs ?csv=PATH naming the label CSV")
    kwargs = {
        k: opts[k] for k in ("image_column", "label_column", "sep", "on_missing") if k in opts
    }
    patient = opts.get("patient_column", "patient_id")
    return read_folder(
        path,
        Path(opts["csv"]),
        patient_column=None if patient in ("", "none") else patient,
        image_size=size,
        **kwargs,
    )


def _open_phantom(path: Path, opts: dict[str, str], size: int) -> CXRDataset:
    return read_nih(path / "labels.csv", image_size=size, pathologies=PHANTOM_PATHOLOGIES)


_SCHEMES: dict[str, tuple[Callable[[Path, dict[str, str], int], CXRDataset], tuple[str, ...]]] = {
    "nih": (_open_nih, ("official_split", "on_missing", "pathologies")),
    "chexpert": (_open_chexpert, ("root", "uncertain", "frontal_only")),
    "chestmnist": (_open_chestmnist, ("split",)),
    "folder": (
        _open_folder,
        ("csv", "image_column", "label_column", "patient_column", "sep", "on_missing"),
    ),
    "phantom": (_open_phantom, ()),
}


def open_dataset(spec: str, image_size: int = 224) -> CXRDataset:
    """Open a dataset from a CLI spec ``SCHEME:PATH[?key=value&...]``.

    Schemes: ``nih:CSV_OR_DIR``, ``chexpert:CSV[?uncertain=zeros&root=DIR]``,
    ``chestmnist:NPZ[?split=test]`` (all three official splits without ``split``),
    ``folder:DIR?csv=CSV``, ``phantom:DIR``.

    Raises:
        DataFormatError: Unknown scheme or option, with the valid ones listed.
    """
    scheme, colon, rest = spec.partition(":")
    if not colon or scheme not in _SCHEMES:
        raise DataFormatError(
            f"dataset spec {spec!r}: unknown scheme {scheme!r}; expected one of "
            f"{sorted(_SCHEMES)} as SCHEME:PATH[?key=value&...]"
        )
    location, _, query = rest.partition("?")
    if not location:
        raise DataFormatError(f"dataset spec {spec!r}: no path after {scheme}:")
    opener, allowed = _SCHEMES[scheme]
    opts = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise DataFormatError(
            f"dataset spec {spec!r}: unknown option(s) {unknown} for {scheme}; "
            f"allowed: {list(allowed)}"
        )
    return opener(Path(location).expanduser(), opts, image_size)
