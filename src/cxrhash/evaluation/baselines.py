"""Reference codes evaluated beside a trained model: LSH on its features, random codes."""

from __future__ import annotations

import faiss
import numpy as np


def lsh_codes(
    db_features: np.ndarray, query_features: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random-hyperplane LSH (FAISS ``IndexLSH``) of float features → packed codes.

    The features are centred on the database mean first, so hyperplanes through the
    origin split the data (plain sign-LSH on non-negative ReLU features would give
    nearly constant codes). FAISS draws the hyperplanes from a fixed seed, so the
    codes are deterministic. Returns ``(db_codes, query_codes)`` packed uint8.
    """
    db = np.ascontiguousarray(db_features, dtype=np.float32)
    q = np.ascontiguousarray(query_features, dtype=np.float32)
    mean = db.mean(axis=0, keepdims=True)
    db, q = db - mean, q - mean
    index = faiss.IndexLSH(db.shape[1], bits, True, False)
    index.train(db)
    return index.sa_encode(db), index.sa_encode(q)


def random_codes(n: int, bits: int, seed: int) -> np.ndarray:
    """Uniformly random packed codes: the chance-level reference."""
    rng = np.random.default_rng(seed)
    return np.packbits(rng.integers(0, 2, size=(n, bits), dtype=np.uint8), axis=1)
