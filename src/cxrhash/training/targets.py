"""Training/evaluation targets from dataset labels (the `No Finding` column of SPEC §6)."""

from __future__ import annotations

import numpy as np
import torch

from cxrhash.data.labels import NO_FINDING, add_no_finding


def label_names(pathologies: list[str], no_finding_class: bool) -> list[str]:
    """Names of the target columns: the pathologies, plus ``No Finding`` when asked."""
    return [*pathologies, NO_FINDING] if no_finding_class else list(pathologies)


def with_no_finding(labels: torch.Tensor, no_finding_class: bool) -> torch.Tensor:
    """Append a ``No Finding`` column (1 where no finding is positive; NaN counts as not).

    SPEC §6 counts ``No Finding`` as a class of its own so that normal–normal pairs
    are relevant to each other; unknown (NaN) entries stay NaN in the other columns.
    """
    if not no_finding_class:
        return labels
    positive = torch.nan_to_num(labels, nan=0.0) > 0
    normal = (~positive.any(dim=1, keepdim=True)).to(labels.dtype)
    return torch.cat([labels, normal], dim=1)


def with_no_finding_np(labels: np.ndarray, no_finding_class: bool) -> np.ndarray:
    """NumPy twin of :func:`with_no_finding` (via :func:`add_no_finding`), for evaluation."""
    labels = np.asarray(labels, np.float32)
    if not no_finding_class:
        return labels
    columns = [f"column {i}" for i in range(labels.shape[1])]  # names are not needed here
    return add_no_finding(labels, columns)[0]


def relevance_labels(labels: np.ndarray) -> np.ndarray:
    """0/1 float labels for retrieval relevance (unknown NaN counts as absent)."""
    return (np.nan_to_num(np.asarray(labels, np.float32), nan=0.0) > 0).astype(np.float32)
