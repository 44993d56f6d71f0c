"""Unlabelled radiographs as pairs of randomly augmented views, for contrastive pretraining."""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from cxrhash.data.dataset import SkippedSample
from cxrhash.data.errors import DataFormatError, ImageReadError, printable_path
from cxrhash.data.files import is_dicom
from cxrhash.data.images import load_resized

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")
MIN_CROP_SCALE = 0.5


def list_images(root: Path) -> list[Path]:
    """Image files of ``root``: the ``file`` column of ``root/manifest.csv`` if present,
    otherwise every PNG/JPEG/TIFF/DICOM file below ``root`` (sorted; extension-less
    files count when they carry the DICOM magic).

    Raises:
        DataFormatError: ``root`` is not a folder, the manifest lacks a ``file``
            column, or no image is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"unlabelled data folder {root} does not exist")
    manifest = root / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if "file" not in (reader.fieldnames or []):
                raise DataFormatError(
                    f"{manifest} has columns {reader.fieldnames}; expected a 'file' column "
                    "holding image paths relative to the folder"
                )
            files = [root / row["file"] for row in reader if row["file"]]
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and _looks_like_image(p))
    if not files:
        raise DataFormatError(f"no PNG/JPEG/TIFF/DICOM images found in {root}")
    return files


def _looks_like_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        return is_dicom(path)
    except OSError:
        return False


def min_crop_scale(strength: float) -> float:
    """Smallest crop area of the views at augmentation ``strength`` (50 % at strength 1)."""
    return 1.0 - (1.0 - MIN_CROP_SCALE) * strength


def pretraining_augmentation(image_size: int, strength: float = 1.0) -> v2.Transform:
    """One random view of a ``1×H×W`` image in [0, 1]: crop, rotate, jitter, flip.

    At ``strength`` 1: random resized crop (area 50–100 %), rotation ±10°,
    brightness/contrast jitter ±40 %, horizontal flip; ``strength`` s scales the
    crop's missing area, the angle and the jitter by s (0 = flips only). Flipping is
    harmless here, unlike in retrieval training: the views only have to share content.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(min_crop_scale(strength), 1.0), antialias=True),
            v2.RandomRotation(
                10.0 * strength, interpolation=v2.InterpolationMode.BILINEAR, fill=0.0
            ),
            v2.ColorJitter(brightness=0.4 * strength, contrast=0.4 * strength),
            v2.RandomHorizontalFlip(),
        ]
    )


class UnlabeledImages(Dataset):
    """Images of a folder, each item two augmented ``1×S×S`` views of one image.

    Unreadable files yield a :class:`SkippedSample` (dropped by
    :func:`collate_views`), so one bad file never stops a long run.

    Args:
        root: folder with ``manifest.csv`` (column ``file``) or image files.
        image_size: side ``S`` of the views.
        max_images: keep a seeded random subset of this many images.
        seed: seed of that subset.
        augment_strength: see :func:`pretraining_augmentation`.
    """

    def __init__(
        self,
        root: Path,
        image_size: int,
        *,
        max_images: int | None = None,
        seed: int = 0,
        augment_strength: float = 1.0,
    ) -> None:
        self.root = Path(root)
        files = list_images(self.root)
        if max_images is not None and max_images < len(files):
            keep = np.sort(
                np.random.default_rng(seed).choice(len(files), max_images, replace=False)
            )
            files = [files[i] for i in keep]
        self.files = files
        self.image_size = int(image_size)
        # Decode at a size where the smallest crop still holds ``image_size`` pixels per side.
        crop = min_crop_scale(augment_strength)
        self.load_size = math.ceil(self.image_size / math.sqrt(crop))
        self.augment = pretraining_augmentation(self.image_size, augment_strength)
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """Hash of the image list (paths relative to the root), to refuse resuming on other data."""
        names = "\n".join(os.path.relpath(path, self.root) for path in self.files)
        # surrogateescape: a file name that is not UTF-8 hashes as its own bytes.
        return hashlib.sha256(names.encode("utf-8", "surrogateescape")).hexdigest()[:16]

    def __getitem__(self, i: int) -> dict | SkippedSample:
        path = self.files[i]
        try:  # any failure of this one file (decoder, resize, memory) is a skip
            pixels = load_resized(path, self.load_size)
        except ImageReadError as err:
            if i not in self._warned:
                self._warned.add(i)
                LOG.warning("skipping unreadable image %s: %s", printable_path(path), err.reason)
            return SkippedSample(idx=i, case_id=path.name, path=str(path), reason=err.reason)
        img = torch.from_numpy(pixels).unsqueeze(0)
        views = [self.augment(img).clamp_(0.0, 1.0) for _ in range(2)]
        return {"idx": i, "query": views[0], "key": views[1]}


def collate_views(items: list[dict | SkippedSample]) -> dict:
    """DataLoader ``collate_fn``: stacks the views of readable items, lists the skipped ones.

    Returns:
        ``{"query": B×1×S×S | None, "key": B×1×S×S | None, "idx": LongTensor B,
        "skipped": list[SkippedSample]}``.
    """
    good = [item for item in items if not isinstance(item, SkippedSample)]
    return {
        "query": torch.stack([item["query"] for item in good]) if good else None,
        "key": torch.stack([item["key"] for item in good]) if good else None,
        "idx": torch.tensor([item["idx"] for item in good], dtype=torch.long),
        "skipped": [item for item in items if isinstance(item, SkippedSample)],
    }
