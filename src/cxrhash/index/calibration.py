"""How close an archive's own films are to each other, and whether a query is that close.

At index time a seeded sample of at most :data:`MAX_SAMPLE` films is kept in the index
folder (``calibration.npz``, bound to the index's model id): per film the statistics of the
backbone's feature map and of the pixels it is given (``models.feature_stats``) and the
float hash outputs. From it :class:`Calibration` derives, each at the
:data:`QUANTILE`-th percentile of the archive's own films:

* the Mahalanobis distance of the feature statistics to the archive's mean, under a
  Ledoit–Wolf covariance (Lee et al. 2018), fitted on :data:`FOLDS` folds of the sample:
  each sampled film is scored by the fit without its fold, a query by the mean over the
  fits, so both are out of sample under fits of the same size (a fit on the whole sample
  would score a query lower than the reference was scored: too few alarms);
* the same Mahalanobis distance of the pixel statistics (histogram, gradients, Laplacian);
* the cosine distance of the float hash outputs to the nearest other film of the sample;
* the Hamming distance of the codes to the nearest other film of the sample.

The verdict (:attr:`Closeness.close`): no close match when either Mahalanobis distance
exceeds its limit. Each limit is the 99.5th percentile, so the archive's own films fire at
most 1 % of the time (the sum; 0.9–1.0 % in the samples measured, docs/design.md). The
code-side figures are reported only: the hash layer maps films of another kind into the
archive's codes and barely separates them.

A file of format 1 (before the pixel statistics) is not used: closeness stays unknown
(logged) until ``cxrhash index --calibrate`` re-makes it, or ``cxrhash index`` adds films.

The file is read as hostile input: anything malformed means "not calibrated", never a crash.
"""

from __future__ import annotations

import functools
import logging
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
from sklearn.covariance import LedoitWolf

from cxrhash.index.durable import fsync_path

LOG = logging.getLogger(__name__)
CALIBRATION_NAME = "calibration.npz"
FORMAT = 2
MAX_SAMPLE = 4096
#: Fewer films than this give no usable 99th percentile: the index stays uncalibrated.
MIN_SAMPLE = 20
#: Percentile of each criterion's limit; either firing means "no close match".
QUANTILE = 99.5
FOLDS = 5
_MAX_DIM = 1 << 14
_MAX_PIXEL_DIM = 256
_MAX_BYTES = 256 << 20
_KEYS = {
    "format", "model_id", "represented", "stats", "pixels", "hashes", "means", "precisions",
    "pixel_means", "pixel_precisions", "limits", "quantile",
}  # fmt: skip
_LIMITS = 4
_BLOCK = 1024


@dataclass(frozen=True)
class CalibrationSample:
    """Films standing for an index of ``represented`` films: n×D feature-map statistics,
    n×k float hash outputs and n×P pixel statistics (float32, finite), for the model
    ``model_id``."""

    model_id: str
    stats: np.ndarray
    hashes: np.ndarray
    represented: int
    pixels: np.ndarray

    def __len__(self) -> int:
        return len(self.stats)


def check_sample(sample: CalibrationSample, model_id: str, bits: int) -> None:
    """Raise ValueError unless ``sample`` is a well-formed sample of ``model_id`` at ``bits``."""
    s, h, p = sample.stats, sample.hashes, sample.pixels
    if sample.model_id != model_id:
        raise ValueError(f"made for model {sample.model_id!r}, not {model_id!r}")
    if any(a.dtype != np.float32 or a.ndim != 2 for a in (s, h, p)):
        raise ValueError("stats, pixels and hashes must be 2-D float32")
    if not MIN_SAMPLE <= len(s) <= MAX_SAMPLE or not len(h) == len(p) == len(s):
        raise ValueError(f"needs {MIN_SAMPLE}…{MAX_SAMPLE} films in all three arrays")
    if not 1 <= s.shape[1] <= _MAX_DIM or h.shape[1] != bits:
        raise ValueError(f"wrong widths {s.shape[1]} and {h.shape[1]} (bits {bits})")
    if not 1 <= p.shape[1] <= _MAX_PIXEL_DIM:
        raise ValueError(f"wrong width {p.shape[1]} of the pixel statistics")
    if not all(np.isfinite(a).all() for a in (s, h, p)):
        raise ValueError("holds non-finite values")
    if not len(s) <= sample.represented:
        raise ValueError("represents fewer films than it holds")


def merge_samples(
    old: CalibrationSample | None, new: CalibrationSample, *, cap: int = MAX_SAMPLE, seed: int = 0
) -> CalibrationSample:
    """One sample of at most ``cap`` films for the union of the two indexes' films: each
    film drawn with the weight of the films it stands for (seeded)."""
    if (
        old is None
        or old.model_id != new.model_id
        or old.stats.shape[1] != new.stats.shape[1]
        or old.pixels.shape[1] != new.pixels.shape[1]
    ):
        parts = [new]
    else:
        parts = [old, new]
    stats = np.concatenate([p.stats for p in parts])
    hashes = np.concatenate([p.hashes for p in parts])
    pixels = np.concatenate([p.pixels for p in parts])
    weight = np.concatenate([np.full(len(p), p.represented / max(len(p), 1)) for p in parts])
    represented = sum(p.represented for p in parts)
    if len(stats) > cap:
        keep = np.random.default_rng(seed).choice(
            len(stats), cap, replace=False, p=weight / weight.sum()
        )
        keep.sort()
        stats, hashes, pixels = stats[keep], hashes[keep], pixels[keep]
    return CalibrationSample(new.model_id, stats, hashes, represented, pixels)


def save_sample(index_dir: Path, sample: CalibrationSample) -> Path:
    """Fit ``sample`` (:meth:`Calibration.fit`) and write it, with its fits and limits, to
    ``index_dir/calibration.npz`` atomically (temp file, fsync, rename): a search then
    loads it without fitting anything."""
    target = Path(index_dir) / CALIBRATION_NAME
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **Calibration.fit(sample).arrays())  # type: ignore[arg-type]
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    fsync_path(target.parent)
    return target


def read_sample(index_dir: Path, model_id: str, bits: int) -> CalibrationSample | None:
    """The index's calibration sample (:func:`read_calibration`), or ``None``."""
    calibration = read_calibration(index_dir, model_id, bits)
    return None if calibration is None else calibration.sample


def read_calibration(index_dir: Path, model_id: str, bits: int) -> Calibration | None:
    """The index's calibration, or ``None`` (logged) when the file is missing or is not a
    well-formed calibration of this model: such an index searches with closeness unknown."""
    path = Path(index_dir) / CALIBRATION_NAME
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            if sum(i.file_size for i in zf.infolist()) > _MAX_BYTES:
                raise ValueError("too large")
        with np.load(path, allow_pickle=False) as z:
            _check_version(z.files, z["format"] if "format" in z.files else None)
            sample = CalibrationSample(
                str(z["model_id"][()]), z["stats"], z["hashes"], int(z["represented"]),
                z["pixels"],
            )  # fmt: skip
            check_sample(sample, model_id, bits)
            maps = Folds(z["means"], z["precisions"])
            pixels = Folds(z["pixel_means"], z["pixel_precisions"])
            return Calibration(sample, maps, pixels, z["limits"], float(z["quantile"]))
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as err:
        LOG.warning("%s is not used (closeness unknown): %s", path, err)
        return None


def _check_version(files: list[str], version: np.ndarray | None) -> None:
    """Raise ValueError unless a file holding ``files`` is a calibration of this format."""
    if version is not None and version.shape == () and int(version) == 1:
        raise ValueError(
            "made by an older cxrhash (no pixel statistics); "
            "re-make it with `cxrhash index --calibrate`"
        )
    if set(files) != _KEYS or version is None or int(version) != FORMAT:
        raise ValueError("not a calibration file of this version")


@dataclass(frozen=True)
class Closeness:
    """Whether a query has a close match in the archive, with its figures and the limits
    (the archive's own films, at the ``quantile``-th percentile of ``sample_size`` films):
    ``mahalanobis`` of the backbone-map statistics, ``pixel_distance`` (Mahalanobis) of the
    pixel statistics; either above its limit means no close match."""

    close: bool
    mahalanobis: float
    mahalanobis_limit: float
    pixel_distance: float
    pixel_limit: float
    cosine: float
    cosine_limit: float
    hamming: int
    hamming_limit: float
    quantile: float
    sample_size: int

    @property
    def message(self) -> str:
        """One sentence for a person: the verdict and the figures behind it."""
        q = f"{self.quantile:g}th percentile"
        where = (
            f"its features lie at Mahalanobis distance {self.mahalanobis:.1f} from the "
            f"archive's, whose own films are within {self.mahalanobis_limit:.1f} ({q}), "
            f"its pixel statistics at {self.pixel_distance:.1f} (archive: within "
            f"{self.pixel_limit:.1f})"
        )
        nearest = (
            f"nearest sampled film at cosine distance {self.cosine:.3f} of the hash outputs "
            f"(archive: within {self.cosine_limit:.3f}) and Hamming distance {self.hamming} "
            f"(archive: within {self.hamming_limit:g})"
        )
        if self.close:
            return f"close match in this archive: {where}; {nearest}"
        return f"no close match in this archive: {where}; {nearest}"

    def as_dict(self) -> dict[str, object]:
        """The figures and the message, for JSON."""
        return {**asdict(self), "message": self.message}


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(
    queries: np.ndarray, ref: np.ndarray, *, skip_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: the cosine distance and the Hamming distance (signs, bit 1 ⇔ f ≥ 0)
    to its nearest ``ref`` row, each nearest on its own; ``skip_self`` when ``queries`` is
    ``ref`` (leave one out). Blockwise, so memory stays bounded."""
    unit_r, sign_r = _normalised(ref), np.where(ref >= 0, 1.0, -1.0).astype(np.float32)
    cos, ham = np.empty(len(queries)), np.empty(len(queries), np.int64)
    for start in range(0, len(queries), _BLOCK):
        part = queries[start : start + _BLOCK]
        sim = _normalised(part) @ unit_r.T
        agree = np.where(part >= 0, 1.0, -1.0).astype(np.float32) @ sign_r.T
        if skip_self:
            rows = np.arange(len(part))
            sim[rows, start + rows] = -np.inf
            agree[rows, start + rows] = -np.inf
        cos[start : start + len(part)] = np.maximum(1.0 - sim.max(1), 0.0)
        ham[start : start + len(part)] = np.rint((ref.shape[1] - agree.max(1)) / 2)
    return cos, ham


def _mahalanobis(mean: np.ndarray, precision: np.ndarray, x: np.ndarray) -> np.ndarray:
    centred = x - mean
    return np.sqrt(np.maximum(((centred @ precision) * centred).sum(1), 0.0))


class Folds:
    """Ledoit–Wolf fits (a mean and a precision matrix) of :data:`FOLDS` folds of a sample,
    each without its fold; a query's score is the mean Mahalanobis distance over them."""

    def __init__(self, means: np.ndarray, precisions: np.ndarray) -> None:
        dim = means.shape[-1] if means.ndim == 2 else -1
        if means.shape != (FOLDS, dim) or precisions.shape != (FOLDS, dim, dim):
            raise ValueError("fits of the wrong shape")
        for a in (means, precisions):
            if a.dtype.kind != "f" or not np.isfinite(a).all():
                raise ValueError("fits must be finite floats")
        self.means, self.precisions = means.astype(np.float64), precisions.astype(np.float64)

    @property
    def dim(self) -> int:
        """Width of the statistics fitted."""
        return int(self.means.shape[1])

    @classmethod
    def fit(cls, x: np.ndarray, seed: int = 0) -> tuple[Folds, np.ndarray]:
        """The fits of ``x`` (n×D) on seeded folds, and each row's distance under the fit
        without its fold (out of sample)."""
        x = x.astype(np.float64)
        folds = np.array_split(np.random.default_rng(seed).permutation(len(x)), FOLDS)
        means, precisions, ref = [], [], np.empty(len(x))
        for fold in folds:
            rest = np.ones(len(x), bool)
            rest[fold] = False
            fit = LedoitWolf().fit(x[rest])
            means.append(fit.location_)
            precisions.append(fit.precision_)
            ref[fold] = _mahalanobis(means[-1], precisions[-1], x[fold])
        return cls(np.stack(means), np.stack(precisions)), ref

    def score(self, x: np.ndarray) -> np.ndarray:
        """Per row of ``x``: the mean Mahalanobis distance over the fold fits."""
        q = np.asarray(x, np.float64)
        return np.mean(
            [_mahalanobis(m, p, q) for m, p in zip(self.means, self.precisions, strict=True)],
            axis=0,
        )


class Calibration:
    """A calibration sample, its fits (:class:`Folds` of the map and of the pixel
    statistics) and its limits (the two Mahalanobis distances, cosine, Hamming), and the
    assessment of queries against them."""

    def __init__(
        self,
        sample: CalibrationSample,
        maps: Folds,
        pixels: Folds,
        limits: np.ndarray,
        quantile: float,
    ) -> None:
        if maps.dim != sample.stats.shape[1] or pixels.dim != sample.pixels.shape[1]:
            raise ValueError("fits of another width than the sample's statistics")
        if limits.shape != (_LIMITS,) or not 0 < quantile <= 100:
            raise ValueError("limits or quantile out of range")
        if limits.dtype.kind != "f" or not np.isfinite(limits).all():
            raise ValueError("limits must be finite floats")
        self.sample, self.maps, self.pixels = sample, maps, pixels
        self.quantile = float(quantile)
        lim = [float(v) for v in limits]
        self.mahalanobis_limit, self.pixel_limit, self.cosine_limit, self.hamming_limit = lim

    @classmethod
    def fit(cls, sample: CalibrationSample, quantile: float = QUANTILE, seed: int = 0) -> Self:
        """Fit ``sample``: Ledoit–Wolf on :data:`FOLDS` seeded folds of each kind of
        statistics, each film scored by the fit without its fold; the ``quantile``-th
        percentiles of the four figures."""
        maps, map_ref = Folds.fit(sample.stats, seed)
        pixels, pixel_ref = Folds.fit(sample.pixels, seed)
        cos, ham = nearest(sample.hashes, sample.hashes, skip_self=True)
        limits = np.array(
            [
                np.percentile(map_ref, quantile),
                np.percentile(pixel_ref, quantile),
                np.percentile(cos, quantile),
                np.percentile(ham, quantile, method="higher"),
            ]
        )
        return cls(sample, maps, pixels, limits, quantile)

    def arrays(self) -> dict[str, np.ndarray | np.generic]:
        """What ``calibration.npz`` holds (plain arrays: it is read without pickle)."""
        return {
            "format": np.int64(FORMAT),
            "model_id": np.str_(self.sample.model_id),
            "represented": np.int64(self.sample.represented),
            "stats": np.ascontiguousarray(self.sample.stats, np.float32),
            "pixels": np.ascontiguousarray(self.sample.pixels, np.float32),
            "hashes": np.ascontiguousarray(self.sample.hashes, np.float32),
            "means": self.maps.means,
            "precisions": self.maps.precisions.astype(np.float32),
            "pixel_means": self.pixels.means,
            "pixel_precisions": self.pixels.precisions,
            "limits": np.array(
                [self.mahalanobis_limit, self.pixel_limit, self.cosine_limit, self.hamming_limit],
                np.float64,
            ),
            "quantile": np.float64(self.quantile),
        }

    @property
    def stats_dim(self) -> int:
        """Width D of the feature-map statistics it was made with."""
        return self.maps.dim

    @property
    def pixels_dim(self) -> int:
        """Width P of the pixel statistics it was made with."""
        return self.pixels.dim

    def assess(self, stats: np.ndarray, pixels: np.ndarray, hashes: np.ndarray) -> list[Closeness]:
        """One :class:`Closeness` per query row (Q×D map statistics, Q×P pixel statistics,
        Q×k float hash outputs)."""
        maha, pix = self.maps.score(stats), self.pixels.score(pixels)
        cos, ham = nearest(np.asarray(hashes, np.float32), self.sample.hashes)
        return [
            Closeness(
                close=bool(m <= self.mahalanobis_limit and p <= self.pixel_limit),
                mahalanobis=float(m),
                mahalanobis_limit=self.mahalanobis_limit,
                pixel_distance=float(p),
                pixel_limit=self.pixel_limit,
                cosine=float(c),
                cosine_limit=self.cosine_limit,
                hamming=int(h),
                hamming_limit=self.hamming_limit,
                quantile=self.quantile,
                sample_size=len(self.sample),
            )
            for m, p, c, h in zip(maha, pix, cos, ham, strict=True)
        ]


def load_calibration(index_dir: Path, model_id: str, bits: int) -> Calibration | None:
    """The calibration of the index at ``index_dir`` (cached while its file is unchanged),
    or ``None`` when it has none usable."""
    path = Path(index_dir) / CALIBRATION_NAME
    try:
        st = path.stat()
    except OSError:
        return None
    return _cached(str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino, model_id, bits)


@functools.lru_cache(maxsize=8)
def _cached(
    path: str, _mtime: int, _size: int, _inode: int, model_id: str, bits: int
) -> Calibration | None:
    return read_calibration(Path(path).parent, model_id, bits)
