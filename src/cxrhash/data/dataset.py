"""The one dataset abstraction: lazily decoded radiographs with multi-labels."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

# DataFormatError and ImageReadError are also re-exported: many modules import them from here.
from cxrhash.data.errors import DataFormatError, DicomWebError, ImageReadError, printable_path
from cxrhash.data.images import load_image, resize_square, undecodable

LOG = logging.getLogger(__name__)


@dataclass
class SkippedSample:
    """Stands in for an item whose image could not be read."""

    idx: int
    case_id: str
    path: str | None
    reason: str


def training_augmentation() -> v2.Transform:
    """Light, radiograph-safe augmentation for a ``1×S×S`` tensor.

    Small random affine only (rotation ±5°, scale 0.95–1.05, shift ±3%). No
    horizontal flip: laterality matters (the heart sits on the left).
    """
    return v2.RandomAffine(
        degrees=5.0,
        translate=(0.03, 0.03),
        scale=(0.95, 1.05),
        interpolation=v2.InterpolationMode.BILINEAR,
        fill=0.0,
    )


class StackedArrays:
    """Several ``N_i×H×W`` image arrays (e.g. memory maps) read as one, without copying.

    ChestMNIST keeps its three official splits in separate ``.npz`` members;
    concatenating them would load up to 5.6 GB (224 px) into memory. This view
    gives :class:`CXRDataset` the ``ndim``/``shape``/``dtype``/``len``/row
    indexing it needs.
    """

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        if not parts or any(p.ndim != 3 for p in parts):
            raise DataFormatError("StackedArrays needs one or more N×H×W arrays")
        first = parts[0]
        if any(p.shape[1:] != first.shape[1:] or p.dtype != first.dtype for p in parts):
            shapes = [(p.shape[1:], str(p.dtype)) for p in parts]
            raise DataFormatError(f"cannot stack image arrays of different H×W/dtype: {shapes}")
        self._parts = list(parts)
        self._starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape: tuple[int, ...] = (int(self._starts[-1]), *first.shape[1:])
        self.ndim = 3
        self.dtype = first.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, row: int) -> np.ndarray:
        """Image ``row`` of the stack (one H×W array)."""
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range 0..{len(self) - 1}")
        part = int(np.searchsorted(self._starts, row, side="right")) - 1
        return self._parts[part][row - int(self._starts[part])]


class CXRDataset(Dataset):
    """Chest radiographs with ``N×P`` labels (1 / 0 / NaN), decoded one at a time.

    Images come from ``paths`` (decoded lazily with :func:`load_image`) or from
    ``arrays`` (``N×H×W`` uint8, in memory or memory-mapped, e.g. ChestMNIST).
    An image that cannot be read, decoded or resized (any ``Exception`` while turning that
    one file into pixels, e.g. a decoder's ``ValueError`` or a ``MemoryError`` on a huge
    file) gives a :class:`SkippedSample` with the reason instead of raising;
    ``KeyboardInterrupt`` and errors outside that one file's decoding still propagate.

    Args:
        case_ids: Unique id of each image (the key used by saved splits).
        patient_ids: Patient of each image (for patient-disjoint splits).
        labels: ``N×P`` float labels.
        pathologies: The ``P`` column names.
        paths: Image file per item (``None`` = no image).
        arrays: Image pixels instead of files (an array or :class:`StackedArrays`).
        image_size: Side ``S`` of the square output.
        augment: Apply :func:`training_augmentation`.
        name: Shown in logs and errors.
        array_rows: Row of ``arrays`` for each item (default ``0..N-1``); lets
            subsets share a memory-mapped array without copying it.
        reader: Reads the image of ``paths[i]`` instead of :func:`load_image` (a
            picklable callable, e.g. a DICOMweb fetch, :mod:`cxrhash.data.dicomweb`); its
            :class:`DicomWebError` ends the run instead of skipping the item.

    Raises:
        DataFormatError: Lengths disagree, labels are not ``N×P``, case ids
            repeat, or neither/both of ``paths`` and ``arrays`` are given.
    """

    def __init__(
        self,
        *,
        case_ids: list[str],
        patient_ids: list[str],
        labels: np.ndarray,
        pathologies: list[str],
        paths: list[str | None] | None = None,
        arrays: np.ndarray | StackedArrays | None = None,
        image_size: int = 224,
        augment: bool = False,
        name: str = "dataset",
        array_rows: np.ndarray | None = None,
        reader: Callable[[str], np.ndarray] | None = None,
    ) -> None:
        n = len(case_ids)
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2 or labels.shape != (n, len(pathologies)):
            raise DataFormatError(
                f"{name}: labels have shape {labels.shape}, expected ({n}, {len(pathologies)}) "
                f"for {n} case ids and pathologies {pathologies}"
            )
        if len(patient_ids) != n:
            raise DataFormatError(
                f"{name}: {len(patient_ids)} patient ids for {n} case ids; expected equal counts"
            )
        if (paths is None) == (arrays is None):
            raise DataFormatError(f"{name}: give exactly one of paths or arrays")
        if paths is not None and len(paths) != n:
            raise DataFormatError(f"{name}: {len(paths)} paths for {n} case ids")
        if arrays is not None:
            if arrays.ndim != 3:
                raise DataFormatError(f"{name}: arrays must be N×H×W, got shape {arrays.shape}")
            array_rows = np.arange(n) if array_rows is None else np.asarray(array_rows)
            if len(array_rows) != n:
                raise DataFormatError(f"{name}: {len(array_rows)} array rows for {n} case ids")
            if n and (array_rows.min() < 0 or array_rows.max() >= len(arrays)):
                raise DataFormatError(f"{name}: array rows out of range 0..{len(arrays) - 1}")
        _check_unique(case_ids, name)
        if image_size <= 0:
            raise DataFormatError(f"{name}: image_size must be positive, got {image_size}")

        self.case_ids = [str(c) for c in case_ids]
        self.patient_ids = [str(p) for p in patient_ids]
        self.labels = labels
        self.pathologies = list(pathologies)
        self.paths: list[str | None] = list(paths) if paths is not None else [None] * n
        self.image_size = int(image_size)
        self.augment = bool(augment)
        self.name = name
        self._arrays = arrays
        self._array_rows = np.arange(n) if array_rows is None else np.asarray(array_rows)
        self._augmentation = training_augmentation() if augment else None
        self._warned: set[int] = set()
        self._reader = reader

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, i: int) -> dict | SkippedSample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.name}: index {i} out of range for {len(self)} items")
        i = int(i) % len(self)
        try:
            pixels = resize_square(self._read(i), self.image_size)
        except ImageReadError as err:
            return self._skip(i, err.reason)
        except DicomWebError:
            raise  # the server, not this item: every later item would fail too
        except Exception as err:  # about this one file: its content made a decoder fail
            LOG.debug("%s: decoding item %d failed", self.name, i, exc_info=True)
            return self._skip(i, undecodable(err))
        img = torch.from_numpy(pixels).unsqueeze(0)
        if self._augmentation is not None:
            img = self._augmentation(img).clamp_(0.0, 1.0)
        return {
            "idx": i,
            "img": img,
            "lab": torch.from_numpy(self.labels[i].copy()),
            "case_id": self.case_ids[i],
            "patient_id": self.patient_ids[i],
        }

    def _read(self, i: int) -> np.ndarray:
        if self._arrays is not None:
            row = self._arrays[int(self._array_rows[i])]
            scale = 255.0 if row.dtype == np.uint8 else 1.0
            return np.asarray(row, dtype=np.float32) / scale
        path = self.paths[i]
        if path is None:
            raise ImageReadError("<none>", "no image path for this item")
        return load_image(path) if self._reader is None else self._reader(path)

    def _skip(self, i: int, reason: str) -> SkippedSample:
        path = self.paths[i]
        if i not in self._warned:
            self._warned.add(i)
            # The file names itself once: its case id is often its path again.
            where = printable_path(path) if path is not None else self.case_ids[i]
            LOG.warning("%s: skipping item %d (%s): %s", self.name, i, where, reason)
        return SkippedSample(idx=i, case_id=self.case_ids[i], path=path, reason=reason)

    def subset(self, indices: Sequence[int] | np.ndarray) -> CXRDataset:
        """A new dataset with the given items, in the given order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return CXRDataset(
            case_ids=[self.case_ids[i] for i in idx],
            patient_ids=[self.patient_ids[i] for i in idx],
            labels=self.labels[idx],
            pathologies=self.pathologies,
            paths=None if self._arrays is not None else [self.paths[i] for i in idx],
            arrays=self._arrays,
            image_size=self.image_size,
            augment=self.augment,
            name=self.name,
            array_rows=self._array_rows[idx] if self._arrays is not None else None,
            reader=self._reader,
        )

    def with_image_size(self, size: int, augment: bool | None = None) -> CXRDataset:
        """A copy with another output size (and optionally augmentation switched)."""
        copy = self.subset(np.arange(len(self)))
        copy.image_size = int(size)
        if augment is not None:
            copy.augment = bool(augment)
            copy._augmentation = training_augmentation() if augment else None
        return copy

    def __repr__(self) -> str:
        return (
            f"CXRDataset(name={self.name!r}, n={len(self)}, pathologies={len(self.pathologies)}, "
            f"image_size={self.image_size}, augment={self.augment})"
        )


def _check_unique(case_ids: Sequence[str], name: str) -> None:
    seen: set[str] = set()
    dupes: list[str] = []
    for case_id in case_ids:
        if case_id in seen:
            dupes.append(case_id)
        seen.add(case_id)
    if dupes:
        raise DataFormatError(
            f"{name}: {len(dupes)} duplicate case ids, e.g. {dupes[:5]}; case ids must be unique"
        )


def collate_skipping(items: list[dict | SkippedSample]) -> dict:
    """DataLoader ``collate_fn`` that drops unreadable items and reports them.

    Returns:
        ``{"img": B×1×S×S, "lab": B×P, "idx": LongTensor B, "case_id": list,
        "patient_id": list, "skipped": list[SkippedSample]}``. When every item
        was skipped, ``img`` and ``lab`` are ``None`` and the lists are empty.
    """
    good = [item for item in items if not isinstance(item, SkippedSample)]
    skipped = [item for item in items if isinstance(item, SkippedSample)]
    return {
        "img": torch.stack([item["img"] for item in good]) if good else None,
        "lab": torch.stack([item["lab"] for item in good]) if good else None,
        "idx": torch.tensor([item["idx"] for item in good], dtype=torch.long),
        "case_id": [item["case_id"] for item in good],
        "patient_id": [item["patient_id"] for item in good],
        "skipped": skipped,
    }


def concat_datasets(datasets: Sequence[CXRDataset], name: str | None = None) -> CXRDataset:
    """Join file-backed datasets with the same pathologies into one.

    Raises:
        DataFormatError: Pathologies or image sizes differ, a dataset is
            array-backed, or a case id appears in more than one dataset.
    """
    if not datasets:
        raise DataFormatError("concat_datasets: no datasets given")
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.pathologies != first.pathologies:
            raise DataFormatError(
                f"cannot join {ds.name!r} (pathologies {ds.pathologies}) with {first.name!r} "
                f"(pathologies {first.pathologies}); expected the same list"
            )
        if ds.image_size != first.image_size:
            raise DataFormatError(
                f"cannot join {ds.name!r} (image_size {ds.image_size}) with {first.name!r} "
                f"(image_size {first.image_size})"
            )
    owner: dict[str, str] = {}
    for ds in datasets:
        if ds._arrays is not None:
            raise DataFormatError(f"cannot join array-backed dataset {ds.name!r}")
        for case_id in ds.case_ids:
            if case_id in owner:
                raise DataFormatError(
                    f"case id {case_id!r} appears in both {owner[case_id]!r} and {ds.name!r}; "
                    "case ids must be unique across joined datasets"
                )
            owner[case_id] = ds.name
    return CXRDataset(
        case_ids=[c for ds in datasets for c in ds.case_ids],
        patient_ids=[p for ds in datasets for p in ds.patient_ids],
        labels=np.concatenate([ds.labels for ds in datasets], axis=0),
        pathologies=first.pathologies,
        paths=[p for ds in datasets for p in ds.paths],
        image_size=first.image_size,
        augment=first.augment,
        name=name or " + ".join(ds.name for ds in datasets),
    )
