"""Bit packing, exact Hamming ranking and the on-disk hash index (SPEC §5)."""

from cxrhash.index.codes import (
    code_bytes,
    hamming_distances,
    hamming_rank,
    pack_codes,
    unpack_codes,
)
from cxrhash.index.store import (
    DuplicateCaseIdError,
    HashIndex,
    HashIndexError,
    IndexCorruptError,
    IndexMismatchError,
    SearchHit,
)

__all__ = [
    "DuplicateCaseIdError",
    "HashIndex",
    "HashIndexError",
    "IndexCorruptError",
    "IndexMismatchError",
    "SearchHit",
    "code_bytes",
    "hamming_distances",
    "hamming_rank",
    "pack_codes",
    "unpack_codes",
]
