"""Synthetic packed codes for tests and benchmarks of the search backends.

:func:`uniform_codes` is the structureless case. :func:`clustered_codes`
imitates learned radiograph codes: a few hundred cluster centres of skewed
sizes, one huge "No Finding" cluster, many items exactly equal to their centre
(saturated hash units give identical codes for similar images) and sparse
bit-flip noise on the rest.
"""

from __future__ import annotations

import numpy as np

from cxrhash.index.codes import code_bytes

_CHUNK = 1 << 16  # rows of noise drawn at once (bounds the float temporary)


def uniform_codes(n: int, bits: int, seed: int = 0) -> np.ndarray:
    """``n`` independent uniform ``bits``-bit codes, packed as n×ceil(bits/8) ``uint8``."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n, code_bytes(bits)), dtype=np.uint8)
    return _clear_padding(codes, bits)


def clustered_codes(
    n: int,
    bits: int,
    seed: int = 0,
    *,
    n_clusters: int = 300,
    no_finding_share: float = 0.4,
    flip_prob: float = 0.02,
    duplicate_share: float = 0.3,
) -> np.ndarray:
    """``n`` packed codes drawn around cluster centres, like learned radiograph codes.

    Args:
        n: number of codes.
        bits: code length.
        seed: random seed.
        n_clusters: number of cluster centres (uniform random codes), the
            first being "No Finding".
        no_finding_share: probability that an item belongs to the "No Finding"
            cluster. The others are spread over the remaining clusters with
            Dirichlet(1) weights, so their sizes are skewed.
        flip_prob: probability that each bit of a non-duplicate item differs
            from its centre (0.02 on 64 bits ≈ 1.3 flips; 27 % of the noisy
            items still equal their centre).
        duplicate_share: probability that an item is an exact copy of its centre.

    Returns:
        n×ceil(bits/8) ``uint8`` packed codes, in random order.
    """
    if n_clusters < 2:
        raise ValueError(f"n_clusters must be >= 2, got {n_clusters}")
    for name, p in (
        ("no_finding_share", no_finding_share),
        ("flip_prob", flip_prob),
        ("duplicate_share", duplicate_share),
    ):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    rng = np.random.default_rng(seed)
    centres = uniform_codes(n_clusters, bits, seed=int(rng.integers(2**32)))
    weights = rng.dirichlet(np.ones(n_clusters - 1))
    cluster = np.where(
        rng.random(n) < no_finding_share, 0, 1 + rng.choice(n_clusters - 1, size=n, p=weights)
    )
    codes = centres[cluster]
    noisy = np.flatnonzero(rng.random(n) >= duplicate_share)
    for start in range(0, len(noisy), _CHUNK):
        rows = noisy[start : start + _CHUNK]
        flips = np.packbits(rng.random((len(rows), bits), dtype=np.float32) < flip_prob, axis=1)
        codes[rows] ^= flips
    return codes


def _clear_padding(codes: np.ndarray, bits: int) -> np.ndarray:
    """Zero the unused low bits of the last byte, as ``pack_codes`` leaves them."""
    pad = 8 * codes.shape[1] - bits
    if pad:
        codes[:, -1] &= np.uint8((0xFF << pad) & 0xFF)
    return codes
