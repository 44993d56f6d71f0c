"""Data layer: label conventions, image/DICOM decoding, the dataset, readers, splits."""

from cxrhash.data.dataset import (
    CXRDataset,
    SkippedSample,
    collate_skipping,
    concat_datasets,
    training_augmentation,
)
from cxrhash.data.dicom import read_dicom
from cxrhash.data.errors import DataFormatError, ImageReadError
from cxrhash.data.images import load_image, resize_square
from cxrhash.data.labels import (
    CHEXPERT_PATHOLOGIES,
    NIH_PATHOLOGIES,
    NO_FINDING,
    PHANTOM_PATHOLOGIES,
    LabelError,
    add_no_finding,
    normalize_label,
    parse_finding_labels,
    similarity_levels,
)
from cxrhash.data.limits import max_pixels, set_max_pixels
from cxrhash.data.readers import (
    open_dataset,
    read_chestmnist,
    read_chexpert,
    read_folder,
    read_nih,
    read_nih_dir,
)
from cxrhash.data.splits import SplitError, load_split, patient_disjoint_split, save_split

__all__ = [
    "CHEXPERT_PATHOLOGIES",
    "NIH_PATHOLOGIES",
    "NO_FINDING",
    "PHANTOM_PATHOLOGIES",
    "CXRDataset",
    "DataFormatError",
    "ImageReadError",
    "LabelError",
    "SkippedSample",
    "SplitError",
    "add_no_finding",
    "collate_skipping",
    "concat_datasets",
    "load_image",
    "load_split",
    "max_pixels",
    "normalize_label",
    "open_dataset",
    "parse_finding_labels",
    "patient_disjoint_split",
    "read_chestmnist",
    "read_chexpert",
    "read_dicom",
    "read_folder",
    "read_nih",
    "read_nih_dir",
    "resize_square",
    "save_split",
    "set_max_pixels",
    "similarity_levels",
    "training_augmentation",
]
