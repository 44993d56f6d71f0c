"""A k-nearest-neighbour probe of a backbone's features: is self-supervised pretraining learning?

The contrastive loss alone cannot tell: its value depends on the queue, the momentum and the
temperature. When the unlabelled folder's ``manifest.csv`` has a ``label`` column (the
shared ``cxr-unlabeled`` set: normal / pneumonia / COVID-19), a fixed, seeded subset of its
images is encoded after every epoch (centre view, global-average-pooled backbone features,
cosine similarity) and each image is classified by its k nearest neighbours among the others
(leave-one-out). Labels are never used for training; the probe only watches. The score is
balanced accuracy (mean recall over classes), so chance is 1 / classes whatever the
class shares.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cxrhash.data.images import ImageReadError, load_image, resize_square

LOG = logging.getLogger(__name__)

LABEL_COLUMN = "label"
# A class with fewer images cannot be scored by a leave-one-out k-NN in any stable way
# (one image of a fourth class caps balanced accuracy at 0.75): it is left out of the probe.
MIN_CLASS_IMAGES = 5
# Side of the thumbnails of the probe's no-network reference (``KnnProbe.pixel_score``).
THUMBNAIL = 16


def manifest_labels(root: Path) -> dict[Path, str]:
    """Image path → label from ``root/manifest.csv``'s ``label`` column ({} without one)."""
    manifest = Path(root) / "manifest.csv"
    if not manifest.is_file():
        return {}
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if LABEL_COLUMN not in columns or "file" not in columns:
            return {}
        return {
            Path(root) / row["file"]: row[LABEL_COLUMN].strip()
            for row in reader
            if row.get("file") and (row.get(LABEL_COLUMN) or "").strip()
        }


def knn_balanced_accuracy(features: Tensor, labels: Sequence[int], k: int) -> float:
    """Leave-one-out k-NN balanced accuracy of L2-normalised ``features`` (N×D).

    Each item's class is the one with the largest summed cosine similarity among its k
    nearest other items; the score is the mean over classes of the share of that class's
    items classified correctly.
    """
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n = len(y)
    if n < 2:
        raise ValueError("the k-NN probe needs at least 2 items")
    sims = features @ features.T
    sims.fill_diagonal_(-float("inf"))
    top, idx = sims.topk(min(k, n - 1), dim=1)
    classes = int(y.max()) + 1
    votes = torch.zeros(n, classes, dtype=features.dtype)
    votes.scatter_add_(1, y[idx], top)
    predicted = votes.argmax(dim=1)
    recalls = [
        float((predicted[y == c] == c).float().mean()) for c in range(classes) if (y == c).any()
    ]
    return float(np.mean(recalls))


class KnnProbe:
    """A fixed labelled subset of images, decoded once, and its k-NN score for a backbone."""

    def __init__(
        self, files: Sequence[Path], labels: Sequence[str], image_size: int, k: int = 10
    ) -> None:
        images, kept = [], []
        for path, label in zip(files, labels, strict=True):
            try:
                images.append(resize_square(load_image(path), image_size))
            except ImageReadError as err:
                LOG.warning("k-NN probe: skipping unreadable image %s: %s", path, err.reason)
                continue
            kept.append(label)
        counts = {label: kept.count(label) for label in set(kept)}
        rare = sorted(label for label, n in counts.items() if n < MIN_CLASS_IMAGES)
        if rare:
            LOG.info(
                "k-NN probe: leaving out classes with fewer than %d images: %s",
                MIN_CLASS_IMAGES, ", ".join(f"{label} ({counts[label]})" for label in rare),
            )  # fmt: skip
            images = [im for im, label in zip(images, kept, strict=True) if label not in rare]
            kept = [label for label in kept if label not in rare]
        self.class_names = sorted(set(kept))
        self.labels = [self.class_names.index(label) for label in kept]
        self.images = torch.from_numpy(np.stack(images)).unsqueeze(1) if images else None
        self.k = k
        self._pixel_score: float | None = None

    @classmethod
    def from_folder(
        cls, root: Path, files: Sequence[Path], image_size: int, size: int, seed: int = 0
    ) -> KnnProbe | None:
        """A probe on up to ``size`` labelled images among ``files`` (seeded), or ``None``
        when the folder has no labels, fewer than 2 classes or ``size`` is 0."""
        labels = manifest_labels(root)
        labelled = [f for f in files if f in labels]
        if size <= 0 or len({labels[f] for f in labelled}) < 2:
            return None
        if len(labelled) > size:
            keep = np.sort(np.random.default_rng(seed).choice(len(labelled), size, replace=False))
            labelled = [labelled[i] for i in keep]
        probe = cls(labelled, [labels[f] for f in labelled], image_size)
        return probe if probe.images is not None and len(set(probe.labels)) >= 2 else None

    def pixel_score(self) -> float:
        """The same k-NN on the probe images shrunk to 16 × 16 pixels: what the probe scores
        with no network at all. A backbone below it has learned nothing the labels reward
        beyond the thumbnails (on ``cxr-unlabeled`` the classes come from different
        sources, so framing and layout alone separate much of them; the thumbnails are
        L2-normalised like the features, so overall brightness does not count)."""
        assert self.images is not None
        if self._pixel_score is None:  # fixed images: computed once per probe
            thumbs = F.adaptive_avg_pool2d(self.images.float(), THUMBNAIL).flatten(1)
            self._pixel_score = knn_balanced_accuracy(
                F.normalize(thumbs, dim=1), self.labels, self.k
            )
        return self._pixel_score

    @torch.no_grad()
    def features(self, backbone: nn.Module, batch_size: int = 128) -> Tensor:
        """L2-normalised global-average-pooled features of the probe images (eval mode)."""
        assert self.images is not None
        was_training = backbone.training
        backbone.eval()
        device = next(backbone.parameters()).device
        try:
            parts = [
                backbone(self.images[i : i + batch_size].to(device)).mean(dim=(2, 3)).float().cpu()
                for i in range(0, len(self.images), batch_size)
            ]
        finally:
            backbone.train(was_training)
        return F.normalize(torch.cat(parts), dim=1)

    def score(self, backbone: nn.Module) -> float:
        """Leave-one-out k-NN balanced accuracy of ``backbone`` on the probe images."""
        return knn_balanced_accuracy(self.features(backbone), self.labels, self.k)

    @property
    def chance(self) -> float:
        """Balanced accuracy of a guess: 1 / number of classes."""
        return 1.0 / len(self.class_names)
