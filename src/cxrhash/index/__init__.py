"""Bit packing, exact Hamming ranking and the on-disk hash index (SPEC §5)."""

from cxrhash.index.codes import (
    code_bytes,
    hamming_distances,
    hamming_rank,
    pack_codes,
    unpack_codes,
)
from cxrhash.index.store import (
    ConcurrentWriteError,
    DuplicateCaseIdError,
    HashIndex,
    HashIndexError,
    IndexCorruptError,
    IndexExistsError,
    IndexMismatchError,
    IntegrityReport,
    SearchHit,
    UnknownCaseIdError,
)

__all__ = [
    "ConcurrentWriteError",
    "DuplicateCaseIdError",
    "HashIndex",
    "HashIndexError",
    "IndexCorruptError",
    "IndexExistsError",
    "IndexMismatchError",
    "IntegrityReport",
    "SearchHit",
    "UnknownCaseIdError",
    "code_bytes",
    "hamming_distances",
    "hamming_rank",
    "pack_codes",
    "unpack_codes",
]
