"""Shallow hashing baselines: each method against a direct re-computation of its paper's step."""

import numpy as np
import pytest
import scipy.linalg

from cxrhash.evaluation.baselines import random_codes
from cxrhash.evaluation.evaluate import code_metrics
from cxrhash.evaluation.shallow import SHALLOW_METHODS, fit_shallow, fit_ssh, itq_rotation
from cxrhash.index.codes import hamming_distances, unpack_codes


def _clusters(
    n: int, dim: int, n_clusters: int, seed: int, spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters (fixed centres) and one-hot float labels of the cluster ids."""
    centres = 4.0 * np.random.default_rng(123).standard_normal((n_clusters, dim))
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n_clusters, size=n)
    feats = centres[ids] + spread * rng.standard_normal((n, dim))
    return feats.astype(np.float32), np.eye(n_clusters, dtype=np.float32)[ids]


def _pca_ref(x: np.ndarray, k: int) -> np.ndarray:
    """Top-k principal directions (D×k) by numpy SVD of the centred data."""
    xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    return np.linalg.svd(xc, full_matrices=False)[2][:k].T


def _quant_loss(v: np.ndarray, r: np.ndarray) -> float:
    z = v @ r
    return float(np.sum((np.where(z >= 0, 1.0, -1.0) - z) ** 2))


def _same_up_to_sign(a: np.ndarray, b: np.ndarray, atol: float = 1e-6) -> bool:
    return np.allclose(np.abs(a.T @ b), np.eye(a.shape[1]), atol=atol)


# --- ITQ ---------------------------------------------------------------------------------


def test_itq_rotation_is_orthogonal_and_lowers_the_quantisation_loss() -> None:
    x, _ = _clusters(400, 24, 6, seed=0)
    model = fit_shallow("itq", x, 8, seed=0)
    rot = model.rotation
    assert np.allclose(rot.T @ rot, np.eye(8), atol=1e-10)
    # sklearn's PCA of float32 features is accurate to float32 precision.
    assert _same_up_to_sign(model.components, _pca_ref(x, 8), atol=1e-4)

    v = (x.astype(np.float64) - model.mean) @ model.components
    final = _quant_loss(v, rot)
    assert final <= _quant_loss(v, itq_rotation(v, n_iter=0, seed=0)) * 0.98
    assert final <= _quant_loss(v, np.eye(8)) * 0.98
    losses = [_quant_loss(v, itq_rotation(v, n_iter=i, seed=0)) for i in range(8)]
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:], strict=False))


def test_itq_rotation_step_is_the_orthogonal_procrustes_solution() -> None:
    x, _ = _clusters(200, 10, 4, seed=1)
    v = (x - x.mean(axis=0)).astype(np.float64) @ _pca_ref(x, 6)
    start = itq_rotation(v, n_iter=0, seed=3)
    expected, _ = scipy.linalg.orthogonal_procrustes(v, np.where(v @ start >= 0, 1.0, -1.0))
    assert np.allclose(itq_rotation(v, n_iter=1, seed=3), expected, atol=1e-10)


def test_itq_rejects_more_bits_than_principal_components() -> None:
    x = np.random.default_rng(0).standard_normal((10, 5))
    with pytest.raises(ValueError, match=r"min\(N, D\) = 5"):
        fit_shallow("itq", x, 6)


# --- SSH ---------------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [1.0, 0.25])
def test_ssh_projection_is_top_eigenvectors_of_adjusted_covariance(eta: float) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 6)) * np.array([3.0, 1.0, 2.0, 0.5, 1.5, 1.0])
    y = (rng.random((40, 3)) < 0.4).astype(np.float32)
    model = fit_ssh(x, 3, train_labels=y, eta=eta)

    xc = x - x.mean(axis=0)
    s = np.array([[1.0 if np.any(y[i] * y[j]) else -1.0 for j in range(40)] for i in range(40)])
    m = xc.T @ s @ xc + eta * xc.T @ xc
    _, vectors = np.linalg.eigh(m)
    assert _same_up_to_sign(model.projection, vectors[:, ::-1][:, :3])


def test_ssh_codes_follow_the_labels() -> None:
    rng = np.random.default_rng(4)
    n = 300
    ids = rng.integers(0, 2, size=n)
    # High-variance nuisance dimensions; the label is a small shift along dimension 5, which
    # is not among the top-2 principal directions.
    x = rng.standard_normal((n, 8)) * np.array([5.0, 5.0, 5.0, 1, 1, 1, 1, 1])
    x[:, 5] += 3.0 * ids
    labels = np.eye(2)[ids]
    same = ids[:, None] == ids[None, :]
    off_diag = ~np.eye(n, dtype=bool)

    def gap(eta: float) -> float:
        codes = fit_ssh(x, 2, train_labels=labels, eta=eta).train_codes
        dist = hamming_distances(codes, codes)
        return float(dist[~same].mean() - dist[same & off_diag].mean())

    assert gap(1.0) > 0.5
    assert abs(gap(1e6)) < 0.2  # the unsupervised (PCA) limit ignores the labels


# --- SH ----------------------------------------------------------------------------------


def test_sh_first_bits_are_modes_along_the_dominant_component() -> None:
    rng = np.random.default_rng(5)
    n = 500
    x = 0.1 * rng.standard_normal((n, 5))
    x[:, 0] += 10.0 * rng.random(n)
    model = fit_shallow("sh", x, 4)
    assert model.pcs.tolist() == [0, 0, 0, 0] and model.modes.tolist() == [1, 2, 3, 4]

    v = (x - x.mean(axis=0)) @ _pca_ref(x, 1)[:, 0]
    t = (v - v.min()) / (v.max() - v.min())
    bits = unpack_codes(model.encode(x), 4).astype(bool)
    # Mode 1 changes sign once, at the midpoint; the PC's sign may be flipped.
    first = t < 0.5
    assert np.array_equal(bits[:, 0], first) or np.array_equal(bits[:, 0], ~first)
    # Mode 2 (cos 2πt > 0) is symmetric under t → 1 − t, so it is sign-free.
    assert np.array_equal(bits[:, 1], (t < 0.25) | (t > 0.75))


def test_sh_keeps_the_smallest_eigenvalue_modes_and_packs_them() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((300, 6)) * np.array([3.0, 2.0, 1.5, 1.0, 0.2, 0.1])
    bits = 12
    model = fit_shallow("sh", x, bits)
    v = (x - x.mean(axis=0)) @ _pca_ref(x, 6)
    span = v.max(axis=0) - v.min(axis=0)
    candidates = sorted((m / span[j]) ** 2 for j in range(6) for m in range(1, bits + 1))[:bits]
    got = sorted((m / span[j]) ** 2 for j, m in zip(model.pcs, model.modes, strict=True))
    assert np.allclose(got, candidates, rtol=1e-6)

    codes = model.encode(x[:7])
    assert codes.shape == (7, 2) and codes.dtype == np.uint8
    assert not np.any(codes[:, 1] & 0x0F)  # unused low bits of the last byte stay zero


# --- all methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHALLOW_METHODS))
def test_fits_are_deterministic_and_encode_reproduces_training_codes(name: str) -> None:
    x, y = _clusters(150, 12, 3, seed=7)
    q, _ = _clusters(20, 12, 3, seed=8)
    first = fit_shallow(name, x, 10, train_labels=y, seed=1)
    again = fit_shallow(name, x, 10, train_labels=y, seed=1)
    assert first.train_codes.shape == (150, 2) and first.train_codes.dtype == np.uint8
    assert np.array_equal(first.encode(x), first.train_codes)
    assert np.array_equal(again.train_codes, first.train_codes)
    assert np.array_equal(again.encode(q), first.encode(q))
    assert np.array_equal(first.encode(x[:0]), np.empty((0, 2), dtype=np.uint8))


def test_lsh_seed_changes_the_hyperplanes() -> None:
    x, _ = _clusters(100, 12, 3, seed=9)
    a = fit_shallow("lsh", x, 16, seed=0).train_codes
    b = fit_shallow("lsh", x, 16, seed=1).train_codes
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", sorted(SHALLOW_METHODS))
def test_bad_inputs_raise_clear_errors(name: str) -> None:
    x, y = _clusters(50, 8, 2, seed=10)
    with pytest.raises(ValueError, match="train_feats must be a 2-D"):
        fit_shallow(name, x[0], 4, train_labels=y)
    with pytest.raises(ValueError, match="train_feats must hold floats"):
        fit_shallow(name, x.astype(np.int64), 4, train_labels=y)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite value at row 3, column 2"):
        fit_shallow(name, bad, 4, train_labels=y)
    with pytest.raises(ValueError, match="bits must be a positive integer"):
        fit_shallow(name, x, 0, train_labels=y)
    model = fit_shallow(name, x, 4, train_labels=y)
    with pytest.raises(ValueError, match="feats have 7 dimensions but .* D = 8"):
        model.encode(x[:, :7])


def test_registry_and_ssh_label_errors() -> None:
    x, y = _clusters(50, 8, 2, seed=11)
    with pytest.raises(ValueError, match="unknown shallow method 'pq'"):
        fit_shallow("pq", x, 4)
    with pytest.raises(ValueError, match="pass train_labels"):
        fit_shallow("ssh", x, 4)
    with pytest.raises(ValueError, match="N = 50 rows"):
        fit_shallow("ssh", x, 4, train_labels=y[:49])
    with pytest.raises(ValueError, match="only 0 and 1"):
        fit_shallow("ssh", x, 4, train_labels=np.where(y > 0, 1.0, np.nan))
    with pytest.raises(ValueError, match="bits <= D = 8"):
        fit_shallow("ssh", x, 9, train_labels=y)


@pytest.mark.parametrize("name", ["itq", "ssh"])
def test_learned_codes_retrieve_clusters_far_better_than_random_codes(name: str) -> None:
    # 8 bits: orthogonal SSH spends bits beyond the 7-dim between-cluster subspace on noise.
    bits = 8
    db, db_lab = _clusters(500, 32, 8, seed=12, spread=3.0)
    q, q_lab = _clusters(80, 32, 8, seed=13, spread=3.0)
    model = fit_shallow(name, db, bits, train_labels=db_lab, seed=0)
    learned = code_metrics(model.encode(q), model.train_codes, q_lab, db_lab, ks=(10,))["mAP"]
    chance = np.mean(
        [
            code_metrics(
                random_codes(len(q), bits, s),
                random_codes(len(db), bits, 100 + s),
                q_lab,
                db_lab,
                ks=(10,),
            )["mAP"]
            for s in range(3)
        ]
    )
    assert learned > chance + 0.3, (learned, chance)
