"""Bit packing and exact Hamming ranking of binary hash codes (SPEC §5).

Codes travel as packed ``uint8`` rows: bit ``j`` of a k-bit code is stored in
byte ``j // 8`` at bit position ``7 - j % 8`` (``np.packbits`` big-endian bit
order), and the unused low bits of the last byte are zero when k is not a
multiple of 8. The numpy functions here are the reference implementation that
the FAISS-backed :class:`cxrhash.index.store.HashIndex` is tested against.
"""

from __future__ import annotations

import logging

import numpy as np

LOG = logging.getLogger(__name__)

# Upper bound on the elements of one temporary XOR block (~16 MB of uint8).
_BLOCK_ELEMENTS = 1 << 24


def code_bytes(bits: int) -> int:
    """Bytes per packed code of ``bits`` bits (``ceil(bits / 8)``)."""
    if bits <= 0:
        raise ValueError(f"bits must be positive, got {bits}")
    return (bits + 7) // 8


def pack_codes(bits: np.ndarray) -> np.ndarray:
    """Pack an N×k array of code bits into N×ceil(k/8) ``uint8`` rows.

    Args:
        bits: N×k codes as booleans, integers in {0, 1} (or {−1, +1}), or
            floats read as signs (``x >= 0`` → 1, so ``sign(0)`` counts as +1,
            matching the model contract). A 1-D array is one code.

    Returns:
        N×ceil(k/8) ``uint8`` array, big-endian bit order within each byte.

    Raises:
        ValueError: for a wrong number of dimensions, NaN, or integers outside
            {0, 1} / {−1, +1}.
    """
    arr = np.asarray(bits)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"codes must be N×k, got an array of shape {arr.shape}")
    if arr.dtype == np.bool_:
        binary = arr
    elif np.issubdtype(arr.dtype, np.integer):
        values = np.unique(arr)
        if np.all(np.isin(values, (0, 1))) or np.all(np.isin(values, (-1, 1))):
            binary = arr == 1
        else:
            raise ValueError(
                f"integer codes must hold only 0/1 or -1/+1, found values {values[:5].tolist()}"
            )
    elif np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            row, col = np.argwhere(np.isnan(arr))[0]
            raise ValueError(f"code value is NaN at row {row}, bit {col}")
        binary = arr >= 0
    else:
        raise ValueError(f"cannot pack codes of dtype {arr.dtype}")
    return np.packbits(binary, axis=1)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: N×ceil(k/8) ``uint8`` → N×k ``uint8`` in {0, 1}."""
    packed = _as_packed(packed, "packed")
    if packed.shape[1] != code_bytes(bits):
        raise ValueError(
            f"{bits}-bit codes pack into {code_bytes(bits)} bytes, got rows of {packed.shape[1]}"
        )
    return np.unpackbits(packed, axis=1, count=bits)


def distinct_count(packed: np.ndarray) -> int:
    """Number of distinct codes among N×B packed rows.

    A collapsed model maps many films to few codes (e.g. 11 distinct 64-bit
    codes among 299 films), which a mean AP alone does not show.
    """
    arr = _as_packed(packed, "packed")
    if len(arr) == 0:
        return 0
    return len(np.unique(arr.view(np.dtype((np.void, arr.shape[1]))).ravel()))


def hamming_distances(q_packed: np.ndarray, db_packed: np.ndarray) -> np.ndarray:
    """All Q×N Hamming distances, ``popcount(q XOR db)``.

    The XOR is formed block by block over the database so the temporary stays
    below ~16 MB whatever N is; only the Q×N ``int32`` result is full size.

    Args:
        q_packed: Q×B packed query codes.
        db_packed: N×B packed database codes.

    Returns:
        Q×N ``int32`` distances.
    """
    q = _as_packed(q_packed, "q_packed")
    db = _as_packed(db_packed, "db_packed")
    if q.shape[1] != db.shape[1]:
        raise ValueError(
            f"query codes have {q.shape[1]} bytes but database codes have {db.shape[1]}"
        )
    n_q, n_db = q.shape[0], db.shape[0]
    out = np.empty((n_q, n_db), dtype=np.int32)
    if n_q == 0 or n_db == 0:
        return out
    q_step = max(1, min(n_q, _BLOCK_ELEMENTS // max(1, db.shape[1])))
    db_step = max(1, _BLOCK_ELEMENTS // (q_step * db.shape[1]))
    for q0 in range(0, n_q, q_step):
        qs = q[q0 : q0 + q_step, None, :]
        for d0 in range(0, n_db, db_step):
            block = np.bitwise_xor(qs, db[None, d0 : d0 + db_step, :])
            np.sum(
                np.bitwise_count(block),
                axis=2,
                dtype=np.int32,
                out=out[q0 : q0 + q_step, d0 : d0 + db_step],
            )
    return out


def hamming_rank(
    q_packed: np.ndarray, db_packed: np.ndarray, k: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rank the database for each query by ascending Hamming distance.

    Ties are broken by database order (stable), as SPEC §5 requires, so the
    result is deterministic and identical across backends.

    Args:
        q_packed: Q×B packed query codes.
        db_packed: N×B packed database codes.
        k: keep the best ``k`` per query (clipped to N); ``None`` ranks all N.

    Returns:
        ``(indices, distances)``: Q×k ``int64`` database rows, best first, and
        the matching Q×k ``int32`` distances.
    """
    q = _as_packed(q_packed, "q_packed")
    db = _as_packed(db_packed, "db_packed")
    n_q, n_db = q.shape[0], db.shape[0]
    if k is not None and k <= 0:
        raise ValueError(f"k must be positive or None, got {k}")
    keep = n_db if k is None else min(k, n_db)
    indices = np.empty((n_q, keep), dtype=np.int64)
    distances = np.empty((n_q, keep), dtype=np.int32)
    if n_q == 0 or keep == 0:
        return indices, distances
    # Bound the Q_chunk×N distance and sort-key matrices to ~16M elements.
    q_step = max(1, _BLOCK_ELEMENTS // max(1, n_db))
    for q0 in range(0, n_q, q_step):
        dist = hamming_distances(q[q0 : q0 + q_step], db)
        if keep == n_db:
            top = np.argsort(dist, axis=1, kind="stable")
        else:
            # distance * N + row is unique per item, so partitioning on it
            # selects exactly the first k of the stable order.
            key = dist.astype(np.int64) * n_db + np.arange(n_db, dtype=np.int64)
            part = np.argpartition(key, keep - 1, axis=1)[:, :keep]
            part_key = np.take_along_axis(key, part, axis=1)
            top = np.take_along_axis(part, np.argsort(part_key, axis=1), axis=1)
        indices[q0 : q0 + q_step] = top
        distances[q0 : q0 + q_step] = np.take_along_axis(dist, top, axis=1)
    return indices, distances


def _as_packed(codes: np.ndarray, name: str) -> np.ndarray:
    """Return ``codes`` as a 2-D C-contiguous ``uint8`` array or raise ValueError."""
    arr = np.asarray(codes)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(
            f"{name} must be an N×B uint8 array of packed codes (see pack_codes), "
            f"got dtype {arr.dtype} and shape {arr.shape}"
        )
    return np.ascontiguousarray(arr)


def check_packed(packed: np.ndarray, bits: int, name: str) -> np.ndarray:
    """``packed`` as C-contiguous N×ceil(bits/8) ``uint8`` codes of an index of ``bits``-bit
    codes (one code may come as a 1-D row); ValueError naming ``name`` otherwise."""
    width = code_bytes(bits)
    arr = np.asarray(packed)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be N×{width} uint8, got shape {arr.shape}")
    if arr.shape[1] != width:
        raise ValueError(
            f"{name} rows have {arr.shape[1]} bytes ({8 * arr.shape[1]} bits); this index "
            f"expects {width} bytes per code ({bits} bits packed with pack_codes)"
        )
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 packed codes (pack_codes), got {arr.dtype}")
    check_padding_bits(arr, bits, name)
    return np.ascontiguousarray(arr)


def check_padding_bits(packed: np.ndarray, bits: int, name: str) -> None:
    """ValueError naming the first row of N×B ``uint8`` ``packed`` whose unused low bits
    (beyond ``bits``) are set: such rows were not made by :func:`pack_codes`."""
    pad = 8 * code_bytes(bits) - bits
    if pad and len(packed):
        bad = np.flatnonzero(packed[:, -1] & np.uint8((1 << pad) - 1))
        if len(bad):
            raise ValueError(
                f"{name} row {int(bad[0])}: the last {pad} padding bits of a {bits}-bit "
                "code must be zero (pack the codes with pack_codes)"
            )


class AmbiguousCodesError(ValueError):
    """A uint8 array of 0/1 values may be unpacked bits or packed bytes: the bit count decides."""


def as_packed_codes(
    codes: np.ndarray, bits: int | None = None, *, name: str = "codes"
) -> tuple[np.ndarray, int]:
    """Packed ``uint8`` rows and their bit count from codes stored either way.

    The layout is decided by dtype and shape, never by the values alone:

    * ``bool``, or any dtype but ``uint8`` holding only 0/1 or only −1/+1:
      unpacked N×k bits (k = columns);
    * ``uint8``: packed N×ceil(k/8) bytes (:func:`pack_codes` layout), unless
      ``bits`` equals the column count and every value is 0/1 (then unpacked
      bits). Without ``bits`` a ``uint8`` array with a byte > 1 is packed with
      k = 8 × columns; one whose bytes are all 0/1 is ambiguous (packed codes
      of few set bits look the same) and raises :class:`AmbiguousCodesError`.

    Args:
        codes: the stored array.
        bits: the code length when known; it must fit the array.
        name: how errors name the array (e.g. its file).

    Raises:
        AmbiguousCodesError: ``uint8`` 0/1 values and no ``bits``.
        ValueError: not 2-D, values that are not bits, a column count that
            fits neither ``bits`` unpacked nor ``bits`` packed, or set padding bits.
    """
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise ValueError(f"{name}: codes must be a 2-D array (N×k bits or N×bytes packed)")
    cols = arr.shape[1]
    if arr.dtype == np.uint8:
        zero_one = arr.max(initial=0) <= 1
        if bits is None and zero_one:
            raise AmbiguousCodesError(
                f"{name}: uint8 codes whose bytes are all 0 or 1 may be N×k unpacked bits or "
                f"N×ceil(k/8) packed bytes; give the code length (bits) to tell them apart"
            )
        if bits is not None and bits == cols and zero_one:
            return pack_codes(arr.astype(bool)), bits
        k = 8 * cols if bits is None else bits
        if cols != code_bytes(k):
            raise ValueError(
                f"{name}: {cols} uint8 columns are neither {k} unpacked bits nor the "
                f"{code_bytes(k)} packed bytes of {k}-bit codes"
            )
        _check_padding(arr, k, name)
        return np.ascontiguousarray(arr), k
    if bits is not None and bits != cols:
        raise ValueError(f"{name}: {cols} columns of unpacked {arr.dtype} bits, expected {bits}")
    values = np.unique(arr)
    if arr.dtype == np.bool_ or set(values.tolist()) <= {0, 1}:
        return pack_codes(arr.astype(bool)), cols
    if set(values.tolist()) <= {-1, 1}:
        return pack_codes(arr > 0), cols
    raise ValueError(
        f"{name}: unpacked {arr.dtype} codes must hold only 0/1 or −1/+1 (packed codes are "
        f"uint8), found values {values[:6].tolist()}"
    )


def _check_padding(packed: np.ndarray, bits: int, name: str) -> None:
    """Raise ValueError when the unused low bits of the last byte are set."""
    spare = 8 * code_bytes(bits) - bits
    if spare and len(packed) and np.any(packed[:, -1] & ((1 << spare) - 1)):
        raise ValueError(
            f"{name}: packed {bits}-bit codes have set padding bits in the last byte; "
            "the array is not packed codes of that length"
        )
