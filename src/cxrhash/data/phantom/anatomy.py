"""A phantom patient's anatomy: drawn once per patient, rendered once on a padded canvas.

Lengths are in units of the image side (0..1), in the PA convention: the
patient's right on the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_BASE_FLARE = 0.015  # how far the lower lungs widen beyond the upper lateral border


@dataclass(frozen=True)
class Anatomy:
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
class Patient:
    """A patient's anatomy rendered once on a canvas padded by ``margin`` pixels.

    Each film crops an ``S×S`` window at a small random offset (positioning
    differs between visits), so the costly layers are computed once per patient.
    """

    anatomy: Anatomy
    margin: int
    y: np.ndarray  # row coordinate of every padded pixel
    x: np.ndarray  # column coordinate of every padded pixel
    lungs: tuple[np.ndarray, np.ndarray]  # lung fields before the heart is cut out
    heart: np.ndarray  # normal heart silhouette
    knob: np.ndarray  # aortic knob
    static: np.ndarray  # body, abdomen, spine, ribs and clavicles
    vessels: np.ndarray  # lung vascular markings, densest at the hila


def _draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy."""
    apex = rng.uniform(0.10, 0.15)
    dome_right = rng.uniform(0.64, 0.70)  # image-left lung = patient's right, sits higher
    dome_left = dome_right + rng.uniform(0.01, 0.04)
    lateral = rng.uniform(0.34, 0.39)
    return Anatomy(
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


def lung_mask(a: Anatomy, x: np.ndarray, y: np.ndarray, side: int) -> np.ndarray:
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


def heart_mask(a: Anatomy, x: np.ndarray, y: np.ndarray, ctr: float) -> np.ndarray:
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


def _ribs(a: Anatomy, x: np.ndarray, y: np.ndarray, thickness: float) -> np.ndarray:
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


def _clavicles(a: Anatomy, x: np.ndarray, y: np.ndarray, thickness: float) -> np.ndarray:
    """Clavicles: S-curved bands from the sternal notch out to the shoulders."""
    u = np.abs(x - a.cx) / a.lateral[0]
    row = a.apex + 0.03 + 0.05 * np.sin(np.pi * np.clip(u, 0.0, 1.2) / 1.2) - 0.06 * u
    band = np.exp(-(((y - row) / (1.4 * thickness)) ** 2))
    return band * ((u > 0.1) & (u < 1.25))


def _spine(a: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Vertebral column: a bright band modulated by vertebral bodies and disc spaces."""
    band = np.exp(-(((x - a.cx) / 0.035) ** 4))
    vertebrae = 0.75 + 0.25 * np.cos(2 * np.pi * (y - a.rib_start) / (0.9 * a.rib_spacing))
    return band * vertebrae


def _body(a: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Soft-tissue thickness of the trunk, 0 outside; narrower at the neck."""
    shoulders = np.sqrt(np.clip((y + 0.02) / (a.apex + 0.02), 0.0, 1.0))
    width = a.body_half_width * (0.45 + 0.55 * shoulders)
    bx = np.abs(x - a.cx) / width
    return (bx <= 1.0) * (0.55 + 0.45 * np.sqrt(np.clip(1.0 - bx**2, 0.0, 1.0)))


def soften(mask: np.ndarray, sigma: float) -> np.ndarray:
    """``mask`` blurred by a Gaussian of ``sigma`` pixels: an organ's soft edge."""
    return ndimage.gaussian_filter(mask.astype(np.float32), sigma)


def build_patient(rng: np.random.Generator, size: int, margin: int) -> Patient:
    """Draw a patient and render the layers that do not change between films."""
    a = _draw_anatomy(rng)
    padded = size + 2 * margin
    coords = ((np.arange(padded) + 0.5 - margin) / size).astype(np.float32)
    y, x = (np.ascontiguousarray(g) for g in np.meshgrid(coords, coords, indexing="ij"))
    edge = 0.6 * size / 128
    body = _body(a, x, y)
    static = a.soft_tissue * soften(body > 0, edge) * body
    static += 0.06 * soften(y > max(a.dome) + 0.02, 4 * edge)
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
    return Patient(
        anatomy=a,
        margin=margin,
        y=y,
        x=x,
        lungs=(lung_mask(a, x, y, 0), lung_mask(a, x, y, 1)),
        heart=heart_mask(a, x, y, a.heart_ctr),
        knob=knob,
        static=static.astype(np.float32),
        vessels=(network * (0.25 + 0.75 * np.exp(-hilum / 0.14))).astype(np.float32),
    )
