"""Synthetic chest radiographs with known findings and lesion masks.

The phantom is the embedded default dataset: ``cxrhash demo`` trains on it in
minutes on a CPU, and tests use its masks to check that attention maps peak on
lesions. Each image is a PA-view radiograph in the usual convention (air dark,
bone and dense tissue bright, the patient's right on the image's left) built
from analytic anatomy (lungs, heart, mediastinum, spine, ribs, clavicles, lung
vessels) plus up to ``max_findings`` of six findings drawn at random places,
then exposed with a random window, gamma and quantum noise.

Each patient keeps one anatomy (drawn from a per-patient generator) over 1-5
images, so patient-disjoint splits and within-patient similarity behave as in
real archives. Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from cxrhash.data.labels import PHANTOM_PATHOLOGIES

LOG = logging.getLogger(__name__)

PHANTOM_FINDINGS: list[str] = list(PHANTOM_PATHOLOGIES)

NO_FINDING = "No Finding"
MAX_IMAGES_PER_PATIENT = 5
MIN_SIZE = 32
_BASE_FLARE = 0.015  # how far the lower lungs widen beyond the upper lateral border

_CARDIOMEGALY, _CONSOLIDATION, _EFFUSION, _MASS, _NODULE, _PNEUMOTHORAX = range(6)


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


@dataclass(frozen=True)
class _Anatomy:
    """Per-patient anatomy, lengths in units of the image side (0..1)."""

    cx: float  # thorax midline
    apex: float  # lung apex row
    waist: float  # row below which the lung borders run straight down
    dome: tuple[float, float]  # hemidiaphragm dome rows (image-left, image-right lung)
    costophrenic: tuple[float, float]  # costophrenic angle rows
    lateral: tuple[float, float]  # lung lateral half-width from the midline
    medial: float  # upper mediastinum half-width
    heart_row: float
    heart_ctr: float  # normal cardiothoracic ratio
    heart_aspect: float
    heart_tilt: float
    body_half_width: float
    rib_start: float
    rib_spacing: float
    rib_curve: float
    soft_tissue: float
    lung_air: float


@dataclass(frozen=True)
class _Patient:
    """A patient's anatomy rendered once on a canvas padded by ``margin`` pixels.

    Each film crops an ``S×S`` window at a small random offset (positioning
    differs between visits), so the costly layers are computed once per patient.
    """

    anatomy: _Anatomy
    margin: int
    y: np.ndarray  # row coordinate of every padded pixel
    x: np.ndarray  # column coordinate of every padded pixel
    lungs: tuple[np.ndarray, np.ndarray]  # lung fields before the heart is cut out
    heart: np.ndarray  # normal heart silhouette
    knob: np.ndarray  # aortic knob
    static: np.ndarray  # body, abdomen, spine, ribs and clavicles
    vessels: np.ndarray  # lung vascular markings, densest at the hila


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Draw one patient's anatomy."""
    apex = rng.uniform(0.10, 0.15)
    dome_right = rng.uniform(0.64, 0.70)  # image-left lung = patient's right, sits higher
    dome_left = dome_right + rng.uniform(0.01, 0.04)
    lateral = rng.uniform(0.34, 0.39)
    return _Anatomy(
        cx=0.5 + rng.uniform(-0.02, 0.02),
        apex=apex,
        waist=rng.uniform(0.40, 0.46),
        dome=(dome_right, dome_left),
        costophrenic=(dome_right + rng.uniform(0.07, 0.11), dome_left + rng.uniform(0.07, 0.11)),
        lateral=(lateral + rng.uniform(-0.01, 0.01), lateral + rng.uniform(-0.01, 0.01)),
        medial=rng.uniform(0.045, 0.06),
        heart_row=rng.uniform(0.57, 0.61),
        heart_ctr=rng.uniform(0.42, 0.48),
        heart_aspect=rng.uniform(0.72, 0.85),
        heart_tilt=np.deg2rad(rng.uniform(15.0, 30.0)),
        body_half_width=rng.uniform(0.47, 0.54),
        rib_start=apex + rng.uniform(-0.03, 0.0),
        rib_spacing=rng.uniform(0.062, 0.072),
        rib_curve=rng.uniform(0.7, 1.0),
        soft_tissue=rng.uniform(0.48, 0.56),
        lung_air=rng.uniform(0.30, 0.36),
    )


def _lung_mask(a: _Anatomy, x: np.ndarray, y: np.ndarray, side: int) -> np.ndarray:
    """Lung field of one side (0 = image left, 1 = image right) as a bool mask.

    Upper part: two super-elliptic quadrants meeting at the apex; lower part:
    between mediastinum and chest wall, above a domed hemidiaphragm that is
    lowest at the lateral costophrenic angle.
    """
    ax = (x - a.cx) * (1.0 if side == 1 else -1.0)
    below_waist = np.clip((y - a.waist) / 0.25, 0.0, 1.0)
    xl = a.lateral[side] + _BASE_FLARE * below_waist
    xm = a.medial + 0.03 * np.clip((y - a.apex - 0.22) / 0.15, 0.0, 1.0)
    xa = a.medial + 0.42 * (a.lateral[side] - a.medial)
    v = np.abs(np.minimum(y - a.waist, 0.0) / (a.waist - a.apex))
    lateral_q = (np.maximum(ax - xa, 0.0) / (xl - xa)) ** 2 + v**2 <= 1.0
    medial_q = (np.maximum(xa - ax, 0.0) / (xa - a.medial)) ** 3 + v**3 <= 1.0
    upper = (y >= a.apex) & np.where(ax >= xa, lateral_q, medial_q)
    u = np.clip((ax - xm) / (xl - xm), 0.0, 1.0)
    bottom = a.dome[side] + (a.costophrenic[side] - a.dome[side]) * u**2 + 0.02 * (1 - u) ** 3
    return upper & (ax >= xm) & (ax <= xl) & (y <= bottom)


def _heart_mask(a: _Anatomy, x: np.ndarray, y: np.ndarray, ctr: float) -> np.ndarray:
    """Heart silhouette: a tilted ellipse whose width gives cardiothoracic ratio ``ctr``.

    The thorax width is the distance between the lungs' lateral borders at the bases.
    """
    thorax_width = a.lateral[0] + a.lateral[1] + 2 * _BASE_FLARE
    half_extent = 0.5 * ctr * thorax_width
    c, s = np.cos(a.heart_tilt), np.sin(a.heart_tilt)
    semi_a = half_extent / np.sqrt(c**2 + (a.heart_aspect * s) ** 2)
    semi_b = a.heart_aspect * semi_a
    hx = a.cx + 0.3 * half_extent  # the heart sits to the patient's left
    hy = min(a.heart_row + 0.3 * (ctr - a.heart_ctr), a.dome[1] - 0.3 * semi_b)
    dx, dy = x - hx, y - hy
    u = (c * dx + s * dy) / semi_a
    v = (-s * dx + c * dy) / semi_b
    return (u**2 + v**2 <= 1.0) & (y <= a.dome[1] + 0.03)


def _bands(offset: np.ndarray, spacing: float, count: int, thickness: float) -> np.ndarray:
    """``count`` parallel bright bands at ``offset = 0, spacing, 2·spacing, ...``."""
    t = offset / spacing
    k = np.rint(t)
    phase = (t - k) * spacing
    return np.exp(-((phase / thickness) ** 2)) * ((k >= 0) & (k < count))


def _ribs(a: _Anatomy, x: np.ndarray, y: np.ndarray, thickness: float) -> np.ndarray:
    """Posterior ribs (arching, falling laterally) and fainter anterior ribs."""
    u = np.abs(x - a.cx) / a.lateral[0]
    lateral_drop = -0.05 + 0.2 * a.rib_curve
    posterior = _bands(
        y - a.rib_start + 0.05 * u - 0.2 * a.rib_curve * u**2.5, a.rib_spacing, 10, thickness
    )
    anterior = _bands(
        y - a.rib_start - lateral_drop - 0.13 * (1 - u), a.rib_spacing, 7, 1.3 * thickness
    )
    cage = np.clip((1.06 - u) / 0.06, 0.0, 1.0) * np.clip((u - 0.04) / 0.06, 0.0, 1.0)
    cage *= np.clip((max(a.costophrenic) + 0.02 - y) / 0.03, 0.0, 1.0)
    return cage * (posterior + 0.5 * anterior * np.clip((u - 0.3) / 0.2, 0.0, 1.0))


def _clavicles(a: _Anatomy, x: np.ndarray, y: np.ndarray, thickness: float) -> np.ndarray:
    """Clavicles: S-curved bands from the sternal notch out to the shoulders."""
    u = np.abs(x - a.cx) / a.lateral[0]
    row = a.apex + 0.03 + 0.05 * np.sin(np.pi * np.clip(u, 0.0, 1.2) / 1.2) - 0.06 * u
    band = np.exp(-(((y - row) / (1.4 * thickness)) ** 2))
    return band * ((u > 0.1) & (u < 1.25))


def _spine(a: _Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Vertebral column: a bright band modulated by vertebral bodies and disc spaces."""
    band = np.exp(-(((x - a.cx) / 0.035) ** 4))
    vertebrae = 0.75 + 0.25 * np.cos(2 * np.pi * (y - a.rib_start) / (0.9 * a.rib_spacing))
    return band * vertebrae


def _body(a: _Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Soft-tissue thickness of the trunk, 0 outside; narrower at the neck."""
    shoulders = np.sqrt(np.clip((y + 0.02) / (a.apex + 0.02), 0.0, 1.0))
    width = a.body_half_width * (0.45 + 0.55 * shoulders)
    bx = np.abs(x - a.cx) / width
    return (bx <= 1.0) * (0.55 + 0.45 * np.sqrt(np.clip(1.0 - bx**2, 0.0, 1.0)))


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(mask.astype(np.float32), sigma)


def _build_patient(rng: np.random.Generator, size: int, margin: int) -> _Patient:
    """Draw a patient and render the layers that do not change between films."""
    a = _draw_anatomy(rng)
    padded = size + 2 * margin
    coords = ((np.arange(padded) + 0.5 - margin) / size).astype(np.float32)
    y, x = (np.ascontiguousarray(g) for g in np.meshgrid(coords, coords, indexing="ij"))
    edge = 0.6 * size / 128
    body = _body(a, x, y)
    static = a.soft_tissue * _soft(body > 0, edge) * body
    static += 0.06 * _soft(y > max(a.dome) + 0.02, 4 * edge)
    static += 0.10 * _spine(a, x, y)
    static += 0.08 * _ribs(a, x, y, 0.011)
    static += 0.12 * _clavicles(a, x, y, 0.011)
    noise = ndimage.gaussian_filter(rng.standard_normal((padded, padded)), 0.012 * size)
    network = np.exp(-((noise / (0.35 * noise.std() + 1e-12)) ** 2))  # zero crossings
    hilum = np.minimum(
        np.hypot(x - (a.cx - a.medial - 0.03), y - a.heart_row + 0.12),
        np.hypot(x - (a.cx + a.medial + 0.03), y - a.heart_row + 0.1),
    )
    knob = ((x - a.cx - a.medial - 0.01) / 0.035) ** 2 + ((y - a.apex - 0.17) / 0.03) ** 2 <= 1
    return _Patient(
        anatomy=a,
        margin=margin,
        y=y,
        x=x,
        lungs=(_lung_mask(a, x, y, 0), _lung_mask(a, x, y, 1)),
        heart=_heart_mask(a, x, y, a.heart_ctr),
        knob=knob,
        static=static.astype(np.float32),
        vessels=(network * (0.25 + 0.75 * np.exp(-hilum / 0.14))).astype(np.float32),
    )


def _pick_centre(
    rng: np.random.Generator, allowed: np.ndarray, radius_px: float
) -> tuple[int, int, float]:
    """A random pixel at least ``radius_px`` inside ``allowed``; shrinks the radius if needed."""
    depth = ndimage.distance_transform_edt(allowed)
    candidates = np.flatnonzero(depth >= radius_px)
    if candidates.size == 0:
        r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
        return int(r), int(c), max(float(depth[r, c]), 1.0)
    r, c = np.unravel_index(int(rng.choice(candidates)), depth.shape)
    return int(r), int(c), radius_px


def _choose_findings(rng: np.random.Generator, p_normal: float, max_findings: int) -> list[int]:
    """Indices of the findings of one image; empty for a normal film."""
    if rng.random() < p_normal:
        return []
    weights = 0.5 ** np.arange(max_findings)
    count = int(rng.choice(np.arange(1, max_findings + 1), p=weights / weights.sum()))
    return sorted(int(i) for i in rng.choice(len(PHANTOM_FINDINGS), size=count, replace=False))


def _row_span(mask: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    return (int(rows[0]), int(rows[-1])) if rows.size else (0, mask.shape[0] - 1)


def _render(
    p: _Patient, findings: list[int], rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one film of patient ``p`` with ``findings``; returns (uint8 image, masks)."""
    a, s, m = p.anatomy, size, p.margin
    shift_r, shift_c = (int(v) for v in rng.integers(-m, m + 1, size=2))
    window = (slice(m - shift_r, m - shift_r + s), slice(m - shift_c, m - shift_c + s))
    y, x = p.y[window], p.x[window]
    rr = np.arange(s)[:, None]
    cc = np.arange(s)[None, :]
    edge = 0.6 * s / 128  # blur (px) that softens organ boundaries
    masks = np.zeros((len(PHANTOM_FINDINGS), s, s), dtype=bool)

    if _CARDIOMEGALY in findings:
        heart = _heart_mask(a, x, y, rng.uniform(0.57, 0.68))
        masks[_CARDIOMEGALY] = heart
    else:
        heart = p.heart[window]
    lungs = [lung[window] & ~heart & ~p.knob[window] for lung in p.lungs]
    density = p.static[window] + 0.05 * _soft(heart, edge)
    markings = p.vessels[window]
    free_lung = [lung.copy() for lung in lungs]

    if _PNEUMOTHORAX in findings:
        # The lung shrinks towards its medial base, leaving air at the apex and chest wall.
        side = int(rng.integers(2))
        scale = rng.uniform(0.76, 0.9)
        anchor_x = a.cx + (1.0 if side == 1 else -1.0) * a.medial
        anchor_y = a.dome[side] - 0.04
        collapsed = _lung_mask(
            a, anchor_x + (x - anchor_x) / scale, anchor_y + (y - anchor_y) / scale, side
        )
        gap = lungs[side] & ~collapsed
        masks[_PNEUMOTHORAX] = gap
        markings = markings * (1.0 - _soft(gap, edge))
        density -= _soft(gap, edge) * rng.uniform(0.05, 0.10)
        rim = _soft(collapsed, 0.7 * edge)
        near_gap = ndimage.binary_dilation(gap, iterations=max(1, round(2 * s / 128)))
        line = np.clip(4.0 * rim * (1.0 - rim), 0.0, 1.0) * near_gap * lungs[side]
        density += line * rng.uniform(0.08, 0.16)
        free_lung[side] &= ~gap

    air = _soft(lungs[0] | lungs[1], edge)
    density -= a.lung_air * air
    density += 0.13 * markings * air

    if _EFFUSION in findings:
        side = int(rng.integers(2))
        lung = free_lung[side]
        top, bottom = _row_span(lung)
        level = bottom - rng.uniform(0.25, 0.5) * (bottom - top)
        ax = (x - a.cx) * (1.0 if side == 1 else -1.0)
        u = np.clip((ax - a.medial) / (a.lateral[side] - a.medial), 0.0, 1.0)
        meniscus = level - rng.uniform(0.05, 0.10) * s * u**2  # fluid climbs the chest wall
        fluid = lung & (rr >= meniscus)
        masks[_EFFUSION] = fluid
        depth = np.clip((rr - meniscus) / (0.04 * s), 0.0, 1.0)
        density += _soft(fluid, 1.5 * edge) * (0.55 + 0.45 * depth) * rng.uniform(0.24, 0.34)
        free_lung[side] &= ~fluid

    if _CONSOLIDATION in findings:
        # A lobe-sized cloud of patchy airspace opacity centred in one lung.
        side = int(rng.integers(2))
        lung = free_lung[side]
        radius = rng.uniform(0.10, 0.14) * s
        r0, c0, _ = _pick_centre(rng, lung, 0.5 * radius)
        patches = ndimage.gaussian_filter(rng.standard_normal((s, s)), 0.03 * s)
        patches /= patches.std() + 1e-12
        cloud = np.exp(-((np.hypot(rr - r0, cc - c0) / radius) ** 2))
        field = np.clip(cloud * (1.0 + 0.6 * patches), 0.0, None) * lung
        region = field > 0.35 * field.max() if field.max() > 0 else lung
        masks[_CONSOLIDATION] = region
        field = ndimage.gaussian_filter(field * region, 1.5 * edge)
        density += field * rng.uniform(0.18, 0.30)
        free_lung[side] &= ~region

    focal_lung = free_lung[0] | free_lung[1]
    if _MASS in findings:
        radius = rng.uniform(0.06, 0.10) * s
        r0, c0, inner = _pick_centre(rng, focal_lung, 0.8 * radius)
        radius = inner / 0.8
        theta = np.arctan2(rr - r0, cc - c0)
        wobble = np.ones((s, s))
        for k in range(2, 7):  # lobulated, irregular edge
            wobble += rng.uniform(0.02, 0.09) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        blob = (np.hypot(rr - r0, cc - c0) <= radius * wobble) & (lungs[0] | lungs[1])
        masks[_MASS] = blob
        density += _soft(blob, 1.2 * edge) * rng.uniform(0.18, 0.32)
        focal_lung &= ~ndimage.binary_dilation(blob, iterations=2)

    if _NODULE in findings:
        for _ in range(int(rng.integers(1, 4))):
            radius = rng.uniform(0.02, 0.035) * s
            r0, c0, inner = _pick_centre(rng, focal_lung, radius + 1)
            radius = max(inner - 1, 1.0)
            dist = np.hypot(rr - r0, cc - c0)
            dot = dist <= radius
            masks[_NODULE] |= dot
            profile = np.sqrt(np.clip(1.0 - (dist / (radius + 0.5)) ** 2, 0.0, 1.0))
            density += profile * rng.uniform(0.25, 0.45)
            focal_lung &= ~ndimage.binary_dilation(dot, iterations=2)

    return _expose(density, rng, s), masks


def _expose(density: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Window, gamma, detector blur and quantum noise; returns a uint8 image."""
    low = rng.uniform(-0.06, 0.04)
    high = rng.uniform(0.72, 0.92)
    img = np.clip((density - low) / (high - low), 0.0, 1.0) ** rng.uniform(0.75, 1.35)
    img = ndimage.gaussian_filter(img, 0.4 * size / 128)
    sigma = rng.uniform(0.008, 0.03)
    img = img + sigma * np.sqrt(img + 0.05) * rng.standard_normal(img.shape)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


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
        layers = _build_patient(np.random.default_rng([seed, 1, patient]), size, margin)
        for visit in range(int(count)):
            rng = np.random.default_rng([seed, 2, patient, visit])
            findings = _choose_findings(rng, p_normal, max_findings)
            image, masks = _render(layers, findings, rng, size)
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


def _finding_labels(labels: np.ndarray) -> str:
    names = [name for name, v in zip(PHANTOM_FINDINGS, labels, strict=True) if v > 0]
    return "|".join(names) if names else NO_FINDING


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` then rename over ``path`` in one step."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_phantom_dataset(
    out_dir: Path, n: int, size: int = 128, *, seed: int = 0, **kw: object
) -> Path:
    """Write a phantom dataset in NIH ChestX-ray14 layout.

    Writes ``out_dir/images/<case_id>`` (8-bit grey PNG), then
    ``out_dir/masks.npz`` (``case_ids``, ``findings``, ``masks`` bit-packed
    along the last axis; read it with ``load_phantom_masks``), and last
    ``out_dir/labels.csv`` (``Image Index``, ``Finding Labels``,
    ``Follow-up #``, ``Patient ID``, ``View Position``,
    ``OriginalImage[Width``, ``Height]``). The CSV is renamed into place only
    after every image exists, so an interrupted run never leaves a CSV that
    names a missing image.

    Args:
        out_dir: dataset folder (created if missing).
        n: number of images.
        size: image side in pixels.
        seed: random seed.
        **kw: passed on to ``generate_phantom`` (``n_patients``, ``p_normal``,
            ``max_findings``).

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    samples = generate_phantom(n, size, seed=seed, **kw)  # type: ignore[arg-type]
    if n > 200:
        from tqdm import tqdm

        samples = tqdm(samples, total=n, desc="phantom", unit="img")
    rows: list[list[str]] = []
    case_ids: list[str] = []
    packed: list[np.ndarray] = []
    visits: dict[str, int] = {}
    for sample in samples:
        Image.fromarray(sample.image).save(image_dir / sample.case_id)
        visit = visits.get(sample.patient_id, 0)
        visits[sample.patient_id] = visit + 1
        rows.append(
            [
                sample.case_id,
                _finding_labels(sample.labels),
                str(visit),
                sample.patient_id,
                "PA",
                str(size),
                str(size),
            ]
        )
        case_ids.append(sample.case_id)
        packed.append(np.packbits(sample.masks, axis=-1))

    def write_masks(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                case_ids=np.array(case_ids, dtype=str),
                findings=np.array(PHANTOM_FINDINGS, dtype=str),
                size=np.int64(size),
                masks=np.stack(packed)
                if packed
                else np.zeros((0, 6, size, -(-size // 8)), np.uint8),
            )

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                [
                    "Image Index",
                    "Finding Labels",
                    "Follow-up #",
                    "Patient ID",
                    "View Position",
                    "OriginalImage[Width",
                    "Height]",
                ]
            )
            writer.writerows(rows)

    _replace_atomically(out_dir / "masks.npz", write_masks)
    _replace_atomically(out_dir / "labels.csv", write_csv)
    LOG.info("wrote %d phantom images to %s", len(rows), out_dir)
    return out_dir


def load_phantom_masks(out_dir: Path) -> tuple[list[str], np.ndarray]:
    """Read ``masks.npz`` written by ``write_phantom_dataset``.

    Returns:
        ``(case_ids, masks)`` with ``masks`` an ``N×F×S×S`` bool array whose
        second axis follows ``PHANTOM_FINDINGS``.

    Raises:
        FileNotFoundError: if ``out_dir/masks.npz`` is missing.
    """
    path = Path(out_dir) / "masks.npz"
    with np.load(path) as data:
        size = int(data["size"])
        masks = np.unpackbits(data["masks"], axis=-1, count=size).astype(bool)
        case_ids = [str(c) for c in data["case_ids"]]
    return case_ids, masks
