"""Shallow hashing baselines learned on frozen features: LSH, ITQ, SSH and SH.

Deep hashing methods are compared with these classic methods fitted on the same
float features. Every method learns from training features (and, for SSH,
multi-hot labels) and then encodes any features to packed ``uint8`` codes
(:func:`cxrhash.index.codes.pack_codes`), so its codes go through the same
Hamming ranking and metrics as a trained model's.

* ``lsh`` — random Gaussian hyperplanes through the training mean.
* ``itq`` — PCA then an orthogonal rotation minimising the quantisation loss
  (Gong & Lazebnik, CVPR 2011 / TPAMI 2013).
* ``ssh`` — eigenvectors of the label-adjusted covariance (Wang, Kumar & Chang,
  TPAMI 2012, orthogonal eigen solution).
* ``sh`` — spectral hashing's analytical eigenfunctions on the PCA box (Weiss,
  Torralba & Fergus, NIPS 2008; as in ``trainSH``/``compressSH``).

Use :func:`fit_shallow` (or the fitters in :data:`SHALLOW_METHODS`) to fit, and
:meth:`ShallowHasher.encode` to encode queries and database.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.linalg
from sklearn.decomposition import PCA

from cxrhash.index.codes import pack_codes

LOG = logging.getLogger(__name__)

# Rows of features cast to float64 at a time, bounding temporaries to ~130 MB at D = 2048.
_CHUNK_ROWS = 8192


@dataclass(kw_only=True)
class ShallowHasher(ABC):
    """A fitted shallow hashing model.

    Attributes:
        name: method name (a key of :data:`SHALLOW_METHODS`).
        bits: code length k.
        mean: (D,) training mean, subtracted from features before projecting.
        train_codes: N×ceil(k/8) packed codes of the training features as
            computed during fitting.
    """

    name: str
    bits: int
    mean: np.ndarray
    train_codes: np.ndarray = field(repr=False)

    @property
    def dim(self) -> int:
        """Feature dimension D the model was fitted on."""
        return int(self.mean.shape[0])

    def encode(self, feats: np.ndarray) -> np.ndarray:
        """Packed codes (N×ceil(bits/8) ``uint8``) of N×D float features."""
        x = check_features(feats, "feats", dim=self.dim)
        return pack_codes(self._code_bits(x))

    @abstractmethod
    def _code_bits(self, feats: np.ndarray) -> np.ndarray:
        """N×bits boolean codes of validated features."""


@dataclass(kw_only=True)
class LinearHasher(ShallowHasher):
    """Sign of a linear projection: bit j = ``(x − mean) · projection[:, j] ≥ 0`` (LSH, SSH)."""

    projection: np.ndarray

    def _code_bits(self, feats: np.ndarray) -> np.ndarray:
        return _project(feats, self.mean, self.projection) >= 0


@dataclass(kw_only=True)
class ITQHasher(ShallowHasher):
    """ITQ: PCA to ``bits`` dimensions, then an orthogonal rotation before the sign."""

    components: np.ndarray  # D×bits principal directions
    rotation: np.ndarray  # bits×bits orthogonal

    def _code_bits(self, feats: np.ndarray) -> np.ndarray:
        return _project(feats, self.mean, self.components) @ self.rotation >= 0


@dataclass(kw_only=True)
class SpectralHasher(ShallowHasher):
    """Spectral hashing: bit i thresholds the 1-D eigenfunction ``modes[i]`` along PC ``pcs[i]``.

    Bit i is ``sin(π/2 + m·π·(v_j − a_j)/(b_j − a_j)) > 0`` with v = PCA projection,
    j = ``pcs[i]``, m = ``modes[i]`` and [a_j, b_j] = ``[lower[j], upper[j]]``.
    """

    components: np.ndarray  # D×n_pcs principal directions
    lower: np.ndarray  # (n_pcs,) minimum of the training projections
    upper: np.ndarray  # (n_pcs,) maximum of the training projections
    pcs: np.ndarray  # (bits,) principal component of each bit
    modes: np.ndarray  # (bits,) eigenfunction mode (≥ 1) of each bit

    def _code_bits(self, feats: np.ndarray) -> np.ndarray:
        return _sh_bits(
            _project(feats, self.mean, self.components),
            self.lower,
            self.upper,
            self.pcs,
            self.modes,
        )


class ShallowFitter(Protocol):
    """Signature shared by the fitters in :data:`SHALLOW_METHODS`."""

    def __call__(
        self,
        train_feats: np.ndarray,
        bits: int,
        *,
        train_labels: np.ndarray | None = None,
        seed: int = 0,
    ) -> ShallowHasher: ...


def fit_lsh(
    train_feats: np.ndarray,
    bits: int,
    *,
    train_labels: np.ndarray | None = None,
    seed: int = 0,
) -> LinearHasher:
    """LSH: ``bits`` seeded N(0, I) hyperplanes through the training mean (labels unused)."""
    x = check_features(train_feats, "train_feats", min_rows=1)
    _check_bits(bits)
    mean = _mean(x)
    projection = np.random.default_rng(seed).standard_normal((x.shape[1], bits))
    codes = _project(x, mean, projection) >= 0
    return LinearHasher(
        name="lsh", bits=bits, mean=mean, projection=projection, train_codes=pack_codes(codes)
    )


def fit_itq(
    train_feats: np.ndarray,
    bits: int,
    *,
    train_labels: np.ndarray | None = None,
    seed: int = 0,
    n_iter: int = 50,
) -> ITQHasher:
    """ITQ: PCA to ``bits`` dimensions and a rotation learned by :func:`itq_rotation`.

    Raises:
        ValueError: if ``bits`` exceeds min(N, D) (PCA cannot give that many directions).
    """
    x = check_features(train_feats, "train_feats", min_rows=2)
    _check_bits(bits)
    if bits > min(x.shape):
        raise ValueError(
            f"ITQ needs bits <= min(N, D) = {min(x.shape)} to project train_feats "
            f"({x.shape[0]}×{x.shape[1]}) onto {bits} principal components"
        )
    mean, components = _pca(x, bits, seed)
    v = _project(x, mean, components)
    rotation = itq_rotation(v, n_iter=n_iter, seed=seed)
    return ITQHasher(
        name="itq",
        bits=bits,
        mean=mean,
        components=components,
        rotation=rotation,
        train_codes=pack_codes(v @ rotation >= 0),
    )


def itq_rotation(v: np.ndarray, *, n_iter: int = 50, seed: int = 0) -> np.ndarray:
    """Orthogonal R minimising ‖B − VR‖²_F over R and B ∈ {−1, +1}^{N×k}.

    Starts from a seeded random orthogonal matrix and alternates B = sgn(VR) with the
    orthogonal Procrustes solution R = Ŝ Sᵀ, where ``S Ω Ŝᵀ`` is the SVD of Bᵀ V.
    Each half-step cannot increase the loss. ``n_iter=0`` returns the initial rotation.

    Args:
        v: N×k zero-centred PCA projections.
        n_iter: number of B/R alternations (50 in the paper).
        seed: seed of the initial rotation.

    Returns:
        k×k orthogonal rotation.
    """
    k = v.shape[1]
    rotation = np.linalg.svd(np.random.default_rng(seed).standard_normal((k, k)))[0]
    for _ in range(n_iter):
        b = np.where(v @ rotation >= 0, 1.0, -1.0)
        u, _, vt = np.linalg.svd(b.T @ v)
        rotation = vt.T @ u.T
    return rotation


def fit_ssh(
    train_feats: np.ndarray,
    bits: int,
    *,
    train_labels: np.ndarray | None = None,
    seed: int = 0,
    eta: float = 1.0,
    n_labeled: int = 1000,
) -> LinearHasher:
    """SSH: the top ``bits`` eigenvectors of ``M = X_lᵀ S X_l + η XᵀX``.

    X holds all centred training features, X_l a seeded sample of at most
    ``n_labeled`` of them with S_ij = +1 when samples i and j share a label and −1
    otherwise. Eigenvector signs are fixed so each column's largest-magnitude
    entry is positive.

    Raises:
        ValueError: without ``train_labels``, or if ``bits`` exceeds D.
    """
    x = check_features(train_feats, "train_feats", min_rows=1)
    _check_bits(bits)
    if train_labels is None:
        raise ValueError("SSH is semi-supervised: pass train_labels (N×C multi-hot 0/1)")
    labels = check_labels(train_labels, "train_labels", n_rows=x.shape[0])
    dim = x.shape[1]
    if bits > dim:
        raise ValueError(f"SSH needs bits <= D = {dim} eigenvectors, got bits={bits}")
    if n_labeled < 1:
        raise ValueError(f"n_labeled must be positive, got {n_labeled}")
    mean = _mean(x)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(x.shape[0], size=min(n_labeled, x.shape[0]), replace=False))
    x_l = x[picked].astype(np.float64) - mean
    y_l = labels[picked].astype(np.float64)
    similarity = np.where(y_l @ y_l.T > 0, 1.0, -1.0)
    adjusted = x_l.T @ similarity @ x_l + eta * _centred_gram(x, mean)
    _, vectors = scipy.linalg.eigh(adjusted, subset_by_index=[dim - bits, dim - 1])
    projection = vectors[:, ::-1]
    largest = np.abs(projection).argmax(axis=0)
    projection = projection * np.sign(projection[largest, np.arange(bits)])
    codes = _project(x, mean, projection) >= 0
    return LinearHasher(
        name="ssh", bits=bits, mean=mean, projection=projection, train_codes=pack_codes(codes)
    )


def fit_sh(
    train_feats: np.ndarray,
    bits: int,
    *,
    train_labels: np.ndarray | None = None,
    seed: int = 0,
) -> SpectralHasher:
    """Spectral hashing: the ``bits`` smallest-eigenvalue 1-D modes on the PCA box.

    PCA to min(bits, N, D) dimensions; [a_j, b_j] is the range of the training
    projections along PC j. Mode m ≥ 1 along PC j has eigenvalue ∝ (m / (b_j − a_j))²;
    like Weiss' ``trainSH``, modes m < ceil((bits + 1)·(b_j − a_j) / max range) are
    enumerated PC by PC and the ``bits`` smallest are kept (stable sort).

    Raises:
        ValueError: if every training projection is constant.
    """
    x = check_features(train_feats, "train_feats", min_rows=2)
    _check_bits(bits)
    mean, components = _pca(x, min(bits, *x.shape), seed)
    v = _project(x, mean, components)
    lower, upper = v.min(axis=0), v.max(axis=0)
    span = upper - lower
    if not (span > 0).any():
        raise ValueError("SH cannot fit constant train_feats: all principal ranges are zero")
    max_mode = np.zeros(len(span), dtype=np.int64)
    usable = span > 0
    max_mode[usable] = np.ceil((bits + 1) * span[usable] / span.max()).astype(np.int64)
    pcs = np.concatenate([np.full(max(m - 1, 0), j) for j, m in enumerate(max_mode)])
    modes = np.concatenate([np.arange(1, m) for m in max_mode])
    order = np.argsort((modes / span[pcs]) ** 2, kind="stable")[:bits]
    pcs, modes = pcs[order].astype(np.int64), modes[order].astype(np.int64)
    return SpectralHasher(
        name="sh",
        bits=bits,
        mean=mean,
        components=components,
        lower=lower,
        upper=upper,
        pcs=pcs,
        modes=modes,
        train_codes=pack_codes(_sh_bits(v, lower, upper, pcs, modes)),
    )


SHALLOW_METHODS: dict[str, ShallowFitter] = {
    "lsh": fit_lsh,
    "itq": fit_itq,
    "ssh": fit_ssh,
    "sh": fit_sh,
}


def fit_shallow(
    name: str,
    train_feats: np.ndarray,
    bits: int,
    *,
    train_labels: np.ndarray | None = None,
    seed: int = 0,
) -> ShallowHasher:
    """Fit the shallow method ``name`` (a key of :data:`SHALLOW_METHODS`) with its defaults.

    Args:
        name: "lsh", "itq", "ssh" or "sh".
        train_feats: N×D float training features.
        bits: code length k ≥ 1.
        train_labels: N×C multi-hot 0/1 labels (required by SSH, ignored otherwise).
        seed: seed of every random choice, so fits are reproducible.

    Returns:
        The fitted model; ``model.encode(feats)`` gives packed codes.
    """
    if name not in SHALLOW_METHODS:
        raise ValueError(
            f"unknown shallow method {name!r}; choose one of {sorted(SHALLOW_METHODS)}"
        )
    hasher = SHALLOW_METHODS[name](train_feats, bits, train_labels=train_labels, seed=seed)
    LOG.info("fitted %s with %d bits on %d×%d features", name, bits, *np.shape(train_feats))
    return hasher


def check_features(
    feats: np.ndarray, name: str, *, dim: int | None = None, min_rows: int = 0
) -> np.ndarray:
    """Return ``feats`` if it is an N×D array of finite floats (with D = ``dim``), else raise."""
    arr = np.asarray(feats)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D N×D array of features, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(
            f"{name} have {arr.shape[1]} dimensions but the hasher was fitted on D = {dim}"
        )
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} need at least {min_rows} rows to fit, got {arr.shape[0]}")
    finite = np.isfinite(arr)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(f"{name} has a non-finite value at row {row}, column {col}")
    return arr


def check_labels(labels: np.ndarray, name: str, *, n_rows: int) -> np.ndarray:
    """Return ``labels`` if it is an ``n_rows``×C array of 0/1 values, else raise."""
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.shape[0] != n_rows:
        raise ValueError(
            f"{name} must be an N×C multi-hot array with N = {n_rows} rows "
            f"(one per training feature), got shape {arr.shape}"
        )
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1 (multi-hot; no NaN or -1)")
    return arr


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits < 1:
        raise ValueError(f"bits must be a positive integer, got {bits!r}")


def _mean(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=0, dtype=np.float64)


def _pca(x: np.ndarray, n_components: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training mean (D,) and the top ``n_components`` principal directions (D×n)."""
    pca = PCA(n_components=n_components, random_state=seed).fit(x)
    return pca.mean_.astype(np.float64), pca.components_.T.astype(np.float64)


def _project(x: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(x − mean) @ matrix`` in float64, a block of rows at a time."""
    out = np.empty((x.shape[0], matrix.shape[1]))
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        block = x[start : start + _CHUNK_ROWS].astype(np.float64) - mean
        out[start : start + _CHUNK_ROWS] = block @ matrix
    return out


def _centred_gram(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``(x − mean)ᵀ (x − mean)`` in float64, a block of rows at a time."""
    gram = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        block = x[start : start + _CHUNK_ROWS].astype(np.float64) - mean
        gram += block.T @ block
    return gram


def _sh_bits(
    v: np.ndarray, lower: np.ndarray, upper: np.ndarray, pcs: np.ndarray, modes: np.ndarray
) -> np.ndarray:
    """Spectral hashing bits ``sin(π/2 + m·π·(v_j − a_j)/(b_j − a_j)) > 0`` (``compressSH``)."""
    t = (v[:, pcs] - lower[pcs]) / (upper[pcs] - lower[pcs])
    return np.sin(np.pi / 2 + modes * np.pi * t) > 0
