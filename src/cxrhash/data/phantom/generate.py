"""Generating phantom films patient by patient, each patient with 1-5 films of one anatomy."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cxrhash.data.phantom.anatomy import build_patient
from cxrhash.data.phantom.findings import PHANTOM_FINDINGS, choose_findings, render_film

MAX_IMAGES_PER_PATIENT = 5
MIN_SIZE = 32


@dataclass
class PhantomSample:
    """One synthetic radiograph with its findings.

    Attributes:
        image: ``S×S`` uint8 grey image.
        masks: ``F×S×S`` bool, one mask per entry of ``PHANTOM_FINDINGS``;
            all False when the finding is absent.
        labels: ``F`` float32 with 1 for present findings, 0 otherwise.
        patient_id: ``"P{j:05d}"``.
        case_id: ``"phantom_{i:06d}.png"`` (also the PNG file name on disk).
    """

    image: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    patient_id: str
    case_id: str


def _images_per_patient(rng: np.random.Generator, n: int, n_patients: int) -> np.ndarray:
    """Split ``n`` images over patients, each getting 1..MAX_IMAGES_PER_PATIENT."""
    extra_slots = np.repeat(np.arange(n_patients), MAX_IMAGES_PER_PATIENT - 1)
    chosen = rng.choice(extra_slots.size, size=n - n_patients, replace=False)
    return 1 + np.bincount(extra_slots[chosen], minlength=n_patients)


def _check_args(n: int, size: int, n_patients: int, p_normal: float, max_findings: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE} pixels, got {size}")
    if not 0.0 <= p_normal <= 1.0:
        raise ValueError(f"p_normal must be a probability in [0, 1], got {p_normal}")
    if not 1 <= max_findings <= len(PHANTOM_FINDINGS):
        raise ValueError(f"max_findings must be in 1..{len(PHANTOM_FINDINGS)}, got {max_findings}")
    if n > 0 and not -(-n // MAX_IMAGES_PER_PATIENT) <= n_patients <= n:
        raise ValueError(
            f"n_patients must lie in {-(-n // MAX_IMAGES_PER_PATIENT)}..{n} for n={n} "
            f"(1 to {MAX_IMAGES_PER_PATIENT} images per patient), got {n_patients}"
        )


def generate_phantom(
    n: int,
    size: int = 128,
    *,
    seed: int = 0,
    n_patients: int | None = None,
    p_normal: float = 0.35,
    max_findings: int = 3,
) -> Iterator[PhantomSample]:
    """Yield ``n`` synthetic radiographs, patient by patient.

    Args:
        n: number of images.
        size: image side S in pixels (>= 32).
        seed: seed of every random draw; the same seed gives the same images.
        n_patients: number of patients (default ``round(n / 2.5)``); each has
            1-5 images sharing one anatomy.
        p_normal: probability that an image has no finding.
        max_findings: most findings on one abnormal image (1 to 6 with
            probabilities falling by half per extra finding).

    Yields:
        ``PhantomSample`` with case ids ``phantom_000000.png``, ... in order.

    Raises:
        ValueError: when an argument is out of range (the message names it).
    """
    if n_patients is None:
        n_patients = max(1, round(n / 2.5)) if n > 0 else 0
    _check_args(n, size, n_patients, p_normal, max_findings)
    if n == 0:
        return
    counts = _images_per_patient(np.random.default_rng([seed, 0]), n, n_patients)
    margin = max(1, round(0.015 * size))
    case = 0
    for patient, count in enumerate(counts):
        layers = build_patient(np.random.default_rng([seed, 1, patient]), size, margin)
        for visit in range(int(count)):
            rng = np.random.default_rng([seed, 2, patient, visit])
            findings = choose_findings(rng, p_normal, max_findings)
            image, masks = render_film(layers, findings, rng, size)
            labels = np.zeros(len(PHANTOM_FINDINGS), dtype=np.float32)
            labels[findings] = 1.0
            yield PhantomSample(
                image=image,
                masks=masks,
                labels=labels,
                patient_id=f"P{patient:05d}",
                case_id=f"phantom_{case:06d}.png",
            )
            case += 1


def phantom_finding_centroids(mask: np.ndarray) -> tuple[float, float]:
    """Centre of mass ``(row, col)`` of a 2-D mask, in pixels.

    Raises:
        ValueError: if the mask is not 2-D or is empty.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (S×S), got shape {mask.shape}")
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("mask is empty: the finding is absent, it has no centroid")
    return float(rows.mean()), float(cols.mean())
