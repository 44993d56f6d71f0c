"""One phantom film: a patient's anatomy at a random offset, its findings painted on, exposed.

Each finding is painted by a function of its own, in a fixed order (the heart,
then pneumothorax, lung air, effusion, consolidation, mass, nodules): the order
of the random draws, so one seed always gives the same film.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cxrhash.data.labels import PHANTOM_PATHOLOGIES
from cxrhash.data.phantom.anatomy import Anatomy, Patient, heart_mask, lung_mask, soften

PHANTOM_FINDINGS: list[str] = list(PHANTOM_PATHOLOGIES)

_CARDIOMEGALY, _CONSOLIDATION, _EFFUSION, _MASS, _NODULE, _PNEUMOTHORAX = range(6)


@dataclass
class _Film:
    """A film being painted: its window on the patient's canvas and its layers so far."""

    anatomy: Anatomy
    size: int
    x: np.ndarray  # column coordinate of every pixel, in image sides
    y: np.ndarray  # row coordinate of every pixel, in image sides
    rr: np.ndarray  # pixel row index, S×1
    cc: np.ndarray  # pixel column index, 1×S
    edge: float  # blur (px) that softens organ boundaries
    masks: np.ndarray  # F×S×S lesion masks
    lungs: list[np.ndarray]  # lung fields without heart and aortic knob
    free_lung: list[np.ndarray]  # lung not yet taken by a finding
    density: np.ndarray  # attenuation, exposed last
    markings: np.ndarray  # lung vascular markings


def choose_findings(rng: np.random.Generator, p_normal: float, max_findings: int) -> list[int]:
    """Indices of the findings of one image; empty for a normal film."""
    if rng.random() < p_normal:
        return []
    weights = 0.5 ** np.arange(max_findings)
    count = int(rng.choice(np.arange(1, max_findings + 1), p=weights / weights.sum()))
    return sorted(int(i) for i in rng.choice(len(PHANTOM_FINDINGS), size=count, replace=False))


def render_film(
    p: Patient, findings: list[int], rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one film of patient ``p`` with ``findings``; returns (uint8 image, masks)."""
    film = _place_film(p, findings, rng, size)
    if _PNEUMOTHORAX in findings:
        _add_pneumothorax(film, rng)
    _add_lung_air(film)
    if _EFFUSION in findings:
        _add_effusion(film, rng)
    if _CONSOLIDATION in findings:
        _add_consolidation(film, rng)
    focal_lung = film.free_lung[0] | film.free_lung[1]
    if _MASS in findings:
        _add_mass(film, focal_lung, rng)
    if _NODULE in findings:
        _add_nodules(film, focal_lung, rng)
    return _expose(film.density, rng, size), film.masks


def _place_film(p: Patient, findings: list[int], rng: np.random.Generator, size: int) -> _Film:
    """Crop the film's window at a random offset; an enlarged heart if it has cardiomegaly."""
    a, s, m = p.anatomy, size, p.margin
    shift_r, shift_c = (int(v) for v in rng.integers(-m, m + 1, size=2))
    window = (slice(m - shift_r, m - shift_r + s), slice(m - shift_c, m - shift_c + s))
    y, x = p.y[window], p.x[window]
    edge = 0.6 * s / 128
    masks = np.zeros((len(PHANTOM_FINDINGS), s, s), dtype=bool)
    if _CARDIOMEGALY in findings:
        heart = heart_mask(a, x, y, rng.uniform(0.57, 0.68))
        masks[_CARDIOMEGALY] = heart
    else:
        heart = p.heart[window]
    lungs = [lung[window] & ~heart & ~p.knob[window] for lung in p.lungs]
    return _Film(
        anatomy=a,
        size=s,
        x=x,
        y=y,
        rr=np.arange(s)[:, None],
        cc=np.arange(s)[None, :],
        edge=edge,
        masks=masks,
        lungs=lungs,
        free_lung=[lung.copy() for lung in lungs],
        density=p.static[window] + 0.05 * soften(heart, edge),
        markings=p.vessels[window],
    )


def _add_pneumothorax(film: _Film, rng: np.random.Generator) -> None:
    """The lung shrinks towards its medial base, leaving air at the apex and chest wall."""
    a, x, y, edge = film.anatomy, film.x, film.y, film.edge
    side = int(rng.integers(2))
    scale = rng.uniform(0.76, 0.9)
    anchor_x = a.cx + (1.0 if side == 1 else -1.0) * a.medial
    anchor_y = a.dome[side] - 0.04
    collapsed = lung_mask(
        a, anchor_x + (x - anchor_x) / scale, anchor_y + (y - anchor_y) / scale, side
    )
    gap = film.lungs[side] & ~collapsed
    film.masks[_PNEUMOTHORAX] = gap
    film.markings = film.markings * (1.0 - soften(gap, edge))
    film.density -= soften(gap, edge) * rng.uniform(0.05, 0.10)
    rim = soften(collapsed, 0.7 * edge)
    near_gap = ndimage.binary_dilation(gap, iterations=max(1, round(2 * film.size / 128)))
    line = np.clip(4.0 * rim * (1.0 - rim), 0.0, 1.0) * near_gap * film.lungs[side]
    film.density += line * rng.uniform(0.08, 0.16)
    film.free_lung[side] &= ~gap


def _add_lung_air(film: _Film) -> None:
    """Darken the lung fields and draw the vascular markings inside them."""
    air = soften(film.lungs[0] | film.lungs[1], film.edge)
    film.density -= film.anatomy.lung_air * air
    film.density += 0.13 * film.markings * air


def _add_effusion(film: _Film, rng: np.random.Generator) -> None:
    """Fluid filling the base of one lung, up to a meniscus that climbs the chest wall."""
    a, s, rr = film.anatomy, film.size, film.rr
    side = int(rng.integers(2))
    lung = film.free_lung[side]
    top, bottom = _row_span(lung)
    level = bottom - rng.uniform(0.25, 0.5) * (bottom - top)
    ax = (film.x - a.cx) * (1.0 if side == 1 else -1.0)
    u = np.clip((ax - a.medial) / (a.lateral[side] - a.medial), 0.0, 1.0)
    meniscus = level - rng.uniform(0.05, 0.10) * s * u**2
    fluid = lung & (rr >= meniscus)
    film.masks[_EFFUSION] = fluid
    depth = np.clip((rr - meniscus) / (0.04 * s), 0.0, 1.0)
    film.density += soften(fluid, 1.5 * film.edge) * (0.55 + 0.45 * depth) * rng.uniform(0.24, 0.34)
    film.free_lung[side] &= ~fluid


def _add_consolidation(film: _Film, rng: np.random.Generator) -> None:
    """A lobe-sized cloud of patchy airspace opacity centred in one lung."""
    s, rr, cc = film.size, film.rr, film.cc
    side = int(rng.integers(2))
    lung = film.free_lung[side]
    radius = rng.uniform(0.10, 0.14) * s
    r0, c0, _ = _pick_centre(rng, lung, 0.5 * radius)
    patches = ndimage.gaussian_filter(rng.standard_normal((s, s)), 0.03 * s)
    patches /= patches.std() + 1e-12
    cloud = np.exp(-((np.hypot(rr - r0, cc - c0) / radius) ** 2))
    field = np.clip(cloud * (1.0 + 0.6 * patches), 0.0, None) * lung
    region = field > 0.35 * field.max() if field.max() > 0 else lung
    film.masks[_CONSOLIDATION] = region
    field = ndimage.gaussian_filter(field * region, 1.5 * film.edge)
    film.density += field * rng.uniform(0.18, 0.30)
    film.free_lung[side] &= ~region


def _add_mass(film: _Film, focal_lung: np.ndarray, rng: np.random.Generator) -> None:
    """A lobulated mass in free lung; ``focal_lung`` loses it and a margin around it."""
    s, rr, cc = film.size, film.rr, film.cc
    radius = rng.uniform(0.06, 0.10) * s
    r0, c0, inner = _pick_centre(rng, focal_lung, 0.8 * radius)
    radius = inner / 0.8
    theta = np.arctan2(rr - r0, cc - c0)
    wobble = np.ones((s, s))
    for k in range(2, 7):  # lobulated, irregular edge
        wobble += rng.uniform(0.02, 0.09) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    blob = (np.hypot(rr - r0, cc - c0) <= radius * wobble) & (film.lungs[0] | film.lungs[1])
    film.masks[_MASS] = blob
    film.density += soften(blob, 1.2 * film.edge) * rng.uniform(0.18, 0.32)
    focal_lung &= ~ndimage.binary_dilation(blob, iterations=2)


def _add_nodules(film: _Film, focal_lung: np.ndarray, rng: np.random.Generator) -> None:
    """One to three small round nodules in free lung, apart from each other and any mass."""
    s, rr, cc = film.size, film.rr, film.cc
    for _ in range(int(rng.integers(1, 4))):
        radius = rng.uniform(0.02, 0.035) * s
        r0, c0, inner = _pick_centre(rng, focal_lung, radius + 1)
        radius = max(inner - 1, 1.0)
        dist = np.hypot(rr - r0, cc - c0)
        dot = dist <= radius
        film.masks[_NODULE] |= dot
        profile = np.sqrt(np.clip(1.0 - (dist / (radius + 0.5)) ** 2, 0.0, 1.0))
        film.density += profile * rng.uniform(0.25, 0.45)
        focal_lung &= ~ndimage.binary_dilation(dot, iterations=2)


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


def _row_span(mask: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    return (int(rows[0]), int(rows[-1])) if rows.size else (0, mask.shape[0] - 1)


def _expose(density: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Window, gamma, detector blur and quantum noise; returns a uint8 image."""
    low = rng.uniform(-0.06, 0.04)
    high = rng.uniform(0.72, 0.92)
    img = np.clip((density - low) / (high - low), 0.0, 1.0) ** rng.uniform(0.75, 1.35)
    img = ndimage.gaussian_filter(img, 0.4 * size / 128)
    sigma = rng.uniform(0.008, 0.03)
    img = img + sigma * np.sqrt(img + 0.05) * rng.standard_normal(img.shape)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
