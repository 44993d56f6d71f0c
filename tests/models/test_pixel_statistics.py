"""The values of ``pixel_statistics`` pinned against a plain reference computation.

Stored closeness calibrations (``index/calibration.py``) hold these figures, so a faster
implementation must give them bit for bit: the reference below follows the definition film by
film and window by window (float64 throughout, the integral image of ``cumsum``, a full sort
for the quantile ranks), and the implementation must match it exactly on random and on
structured films at the sizes the models take.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrhash.models.feature_stats import HIST_BINS, PIXEL_DIM, PIXEL_SIDE, pixel_statistics

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def reference_area_mean(film: np.ndarray) -> np.ndarray:
    """One H×W film area-averaged to at most PIXEL_SIDE a side, window by window, from the
    corners of its float64 integral image (``adaptive_avg_pool2d``'s windows)."""
    h, w = film.shape
    out_h, out_w = min(h, PIXEL_SIDE), min(w, PIXEL_SIDE)
    if (out_h, out_w) == (h, w):
        return film
    ii = np.zeros((h + 1, w + 1))
    ii[1:, 1:] = film.cumsum(0).cumsum(1)
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        r0, r1 = i * h // out_h, -(-(i + 1) * h // out_h)
        for j in range(out_w):
            c0, c1 = j * w // out_w, -(-(j + 1) * w // out_w)
            total = ii[r1, c1] - ii[r0, c1] - ii[r1, c0] + ii[r0, c0]
            out[i, j] = total / ((r1 - r0) * (c1 - c0))
    return out


def reference_film(film: np.ndarray) -> np.ndarray:
    """PIXEL_DIM float32 figures of one film (c×H×W): histogram, then gradient and
    Laplacian quantiles and means."""
    a = np.clip(reference_area_mean(film.astype(np.float64).mean(0)), 0.0, 1.0)
    counts = np.zeros(HIST_BINS)
    for v in a.ravel():
        counts[min(int(v * HIST_BINS), HIST_BINS - 1)] += 1
    figures = list(np.sqrt(counts / a.size))
    gx, gy = a[:-1, 1:] - a[:-1, :-1], a[1:, :-1] - a[:-1, :-1]
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    for edges in (np.sqrt(gx**2 + gy**2).ravel(), np.abs(lap).ravel()):
        ranked = np.sort(edges)
        figures += [ranked[round(q * (len(ranked) - 1))] for q in QUANTILES]
        figures.append(edges.mean())
    return np.asarray(figures, dtype=np.float64).astype(np.float32)


def structured(size: int) -> torch.Tensor:
    """Films that are no noise: a blank, a ramp, a step, a checkerboard, a quantised ramp, a
    disc, 8-bit noise and values outside [0, 1] (clipped)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ramp = xx / (size - 1)
    eight_bit = torch.randint(0, 256, (size, size), generator=torch.Generator().manual_seed(1))
    films = [
        torch.full((size, size), 0.3),
        ramp,
        (xx >= size // 2).double(),
        ((xx // 8 + yy // 8) % 2).double(),
        torch.round(ramp * 4) / 4,
        (((xx - size / 2) ** 2 + (yy - size / 3) ** 2) < (size / 4) ** 2).double() * 0.7 + 0.1,
        eight_bit / 255.0,
        ramp * 3 - 1,
    ]
    return torch.stack(films).float().unsqueeze(1)


def check(x: torch.Tensor) -> None:
    """pixel_statistics(x) equals the reference bit for bit and leaves x unchanged."""
    before = x.clone()
    got = pixel_statistics(x).numpy()
    want = np.stack([reference_film(film) for film in x.numpy()])
    assert got.shape == (len(x), PIXEL_DIM) and got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert torch.equal(x, before)


@pytest.mark.parametrize("size", [64, 128, 224])
def test_pixel_statistics_match_the_reference_on_random_films(size: int) -> None:
    generator = torch.Generator().manual_seed(size)
    check(torch.rand(4, 1, size, size, generator=generator))
    check(torch.rand(2, 3, size, size, generator=generator))  # channels averaged first
    check(torch.rand(2, 1, size, size, generator=generator, dtype=torch.float64))


@pytest.mark.parametrize("size", [64, 128, 224])
def test_pixel_statistics_match_the_reference_on_structured_films(size: int) -> None:
    check(structured(size))


@pytest.mark.parametrize("shape", [(40, 40), (100, 100), (65, 300), (300, 30)])
def test_pixel_statistics_match_the_reference_at_other_shapes(shape: tuple[int, int]) -> None:
    """Below the side, sizes that do not divide it and films that are not square."""
    check(torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(sum(shape))))


@pytest.mark.parametrize("size", [100, 128, 224])
def test_reference_area_mean_is_adaptive_average_pooling(size: int) -> None:
    """The reference's windows are adaptive_avg_pool2d's, up to the rounding of the integral
    image's large sums (a few 1e-13 here)."""
    generator = torch.Generator().manual_seed(size)
    film = torch.rand(size, size, generator=generator, dtype=torch.float64)
    pooled = F.adaptive_avg_pool2d(film[None, None], PIXEL_SIDE)[0, 0].numpy()
    np.testing.assert_allclose(reference_area_mean(film.numpy()), pooled, rtol=0, atol=1e-11)
