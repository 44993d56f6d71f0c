"""Readers for the dataset formats of SPEC §7; each returns a lazy :class:`CXRDataset`.

No reader decodes images: they parse label files and locate image files. One
module per source format (:mod:`.nih`, :mod:`.chexpert`, :mod:`.chestmnist`,
:mod:`.folder`); :mod:`.spec` parses the CLI's ``--data SCHEME:PATH[?key=value&...]``
spec (:func:`open_dataset`).
"""

from cxrhash.data.readers.chestmnist import (
    CHESTMNIST_LABELS,
    CHESTMNIST_SPLITS,
    chestmnist_case_id,
    chestmnist_official_parts,
    read_chestmnist,
)
from cxrhash.data.readers.chexpert import UNCERTAIN_POLICIES, read_chexpert
from cxrhash.data.readers.folder import read_folder
from cxrhash.data.readers.label_rows import ON_MISSING, Pathologies
from cxrhash.data.readers.nih import (
    NIH_COLUMNS,
    NIH_LABEL_FILES,
    find_nih_label_files,
    read_nih,
    read_nih_dir,
)
from cxrhash.data.readers.spec import open_dataset

__all__ = [
    "CHESTMNIST_LABELS",
    "CHESTMNIST_SPLITS",
    "NIH_COLUMNS",
    "NIH_LABEL_FILES",
    "ON_MISSING",
    "UNCERTAIN_POLICIES",
    "Pathologies",
    "chestmnist_case_id",
    "chestmnist_official_parts",
    "find_nih_label_files",
    "open_dataset",
    "read_chestmnist",
    "read_chexpert",
    "read_folder",
    "read_nih",
    "read_nih_dir",
]
