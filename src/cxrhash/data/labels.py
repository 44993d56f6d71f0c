"""Pathology names and multi-label arrays.

Names follow torchxrayvision (``Effusion``, not ``Pleural Effusion``;
``Pleural_Thickening``) so our datasets mix with theirs. Labels are ``N×P``
float32 arrays holding 1 (present), 0 (absent) or NaN (unknown). ``No Finding``
is not a pathology column: :func:`with_no_finding_np` (and its tensor twin
:func:`with_no_finding`) derives it where SPEC §6 wants it as a class of its
own, for training targets and evaluation alike.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

LOG = logging.getLogger(__name__)

NO_FINDING = "No Finding"

NIH_PATHOLOGIES: list[str] = sorted(
    [
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Effusion",
        "Emphysema",
        "Fibrosis",
        "Hernia",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pleural_Thickening",
        "Pneumonia",
        "Pneumothorax",
    ]
)

CHEXPERT_PATHOLOGIES: list[str] = sorted(
    [
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Effusion",
        "Enlarged Cardiomediastinum",
        "Fracture",
        "Lung Lesion",
        "Lung Opacity",
        "Pleural Other",
        "Pneumonia",
        "Pneumothorax",
        "Support Devices",
    ]
)

PHANTOM_PATHOLOGIES: list[str] = [
    "Cardiomegaly",
    "Consolidation",
    "Effusion",
    "Mass",
    "Nodule",
    "Pneumothorax",
]

_ALIASES: dict[str, str] = {
    "Pleural Effusion": "Effusion",
    "Pleural Thickening": "Pleural_Thickening",
    "Pleural": "Pleural_Thickening",  # MedMNIST's ChestMNIST spelling
    "Normal": NO_FINDING,
}


class LabelError(ValueError):
    """A label cell holds a name that is not one of the expected pathologies."""


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in " _-")


_CANONICAL: dict[str, str] = {
    _key(name): name for name in [*NIH_PATHOLOGIES, *CHEXPERT_PATHOLOGIES, NO_FINDING]
}
_CANONICAL.update({_key(alias): name for alias, name in _ALIASES.items()})


def normalize_label(name: str) -> str:
    """Return the torchxrayvision spelling of a finding name.

    Matching ignores case, spaces, underscores and hyphens, and maps known
    aliases (``Pleural Effusion`` → ``Effusion``). A name that is not known is
    returned stripped but otherwise unchanged, so custom label sets still work.
    """
    stripped = name.strip()
    return _CANONICAL.get(_key(stripped), stripped)


def parse_finding_labels(
    text: str, pathologies: list[str], where: str, sep: str = "|"
) -> np.ndarray:
    """Turn an NIH-style ``"Effusion|Mass"`` cell into a multi-hot vector.

    Args:
        text: The cell; ``No Finding`` or an empty cell gives all zeros.
        pathologies: Column order of the result.
        where: Location for error messages, e.g. ``"labels.csv line 18"``.
        sep: Separator between findings.

    Returns:
        float32 array of length ``len(pathologies)``.

    Raises:
        LabelError: A finding is not one of ``pathologies``.
    """
    column = {name: i for i, name in enumerate(pathologies)}
    out = np.zeros(len(pathologies), dtype=np.float32)
    for raw in text.split(sep):
        if not raw.strip():
            continue
        name = normalize_label(raw)
        if name == NO_FINDING:
            continue
        if name not in column:
            raise LabelError(
                f"{where}: unknown finding {raw.strip()!r}; expected one of "
                f"{pathologies} or {NO_FINDING!r}"
            )
        out[column[name]] = 1.0
    return out


def label_names(pathologies: list[str], no_finding_class: bool) -> list[str]:
    """Names of the target columns: the pathologies, plus ``No Finding`` when asked."""
    return [*pathologies, NO_FINDING] if no_finding_class else list(pathologies)


def with_no_finding_np(labels: np.ndarray, no_finding_class: bool) -> np.ndarray:
    """The ``N×P`` labels as float32, with a ``No Finding`` column appended when asked.

    ``No Finding`` is 1 where no pathology is 1; NaN (unknown) counts as not
    positive and stays NaN in its own column. SPEC §6 counts ``No Finding`` as a
    class of its own so that normal–normal pairs are relevant to each other.
    """
    labels = np.asarray(labels, np.float32)
    if not no_finding_class:
        return labels
    if labels.ndim != 2:
        raise ValueError(f"labels have shape {labels.shape}, expected N×P")
    positive = np.nan_to_num(labels, nan=0.0) == 1.0
    no_finding = (~positive.any(axis=1)).astype(np.float32)[:, None]
    return np.concatenate([labels, no_finding], axis=1)


def add_no_finding(labels: np.ndarray, pathologies: list[str]) -> tuple[np.ndarray, list[str]]:
    """:func:`with_no_finding_np` for labels with named columns, checked against the names.

    Returns:
        The ``N×(P+1)`` float32 labels and the extended name list.
    """
    if labels.ndim != 2 or labels.shape[1] != len(pathologies):
        raise ValueError(
            f"labels have shape {labels.shape}, expected (N, {len(pathologies)}) "
            f"for pathologies {pathologies}"
        )
    if NO_FINDING in pathologies:
        raise ValueError(f"pathologies already contain {NO_FINDING!r}")
    return with_no_finding_np(labels, True), label_names(pathologies, True)


def with_no_finding(labels: torch.Tensor, no_finding_class: bool) -> torch.Tensor:
    """Tensor twin of :func:`with_no_finding_np` for training targets (same dtype and device).

    A label counts as positive when above 0 (NaN as not), as in
    :func:`relevance_labels`; for the 1 / 0 / NaN labels the readers make this is
    the ``== 1`` of :func:`with_no_finding_np`.
    """
    if not no_finding_class:
        return labels
    positive = torch.nan_to_num(labels, nan=0.0) > 0
    normal = (~positive.any(dim=1, keepdim=True)).to(labels.dtype)
    return torch.cat([labels, normal], dim=1)


def relevance_labels(labels: np.ndarray) -> np.ndarray:
    """0/1 float labels for retrieval relevance (unknown NaN counts as absent)."""
    return (np.nan_to_num(np.asarray(labels, np.float32), nan=0.0) > 0).astype(np.float32)


def similarity_levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shared-label counts ``r_ij = |Y_a_i ∩ Y_b_j|`` (SPEC §6), NaN as 0.

    Args:
        a: ``Na×P`` labels.
        b: ``Nb×P`` labels.

    Returns:
        ``Na×Nb`` float32 matrix.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"label arrays must be N×P with equal P, got {a.shape} and {b.shape}")
    pos_a = (np.nan_to_num(a, nan=0.0) == 1.0).astype(np.float32)
    pos_b = (np.nan_to_num(b, nan=0.0) == 1.0).astype(np.float32)
    return pos_a @ pos_b.T
