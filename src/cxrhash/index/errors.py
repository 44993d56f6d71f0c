"""Errors raised by the persistent hash index (:mod:`cxrhash.index.store`)."""

from __future__ import annotations


class HashIndexError(ValueError):
    """Base class for errors about a hash index or the data given to it."""


class IndexMismatchError(HashIndexError):
    """The index was built by another model (or with another code length or backend)."""


class IndexCorruptError(HashIndexError):
    """A file of the index is missing, truncated, inconsistent with the others, or fails
    its checksum in ``index.json`` (codes: CRC-32; metadata: SHA-256)."""


class IndexExistsError(HashIndexError):
    """A new index cannot be made at a path: it is a file, an index already, or a folder
    holding other files."""


class DuplicateCaseIdError(HashIndexError):
    """A case id occurs twice in a batch or is already in the index."""


class UnknownCaseIdError(HashIndexError):
    """A case id to remove is not in the index."""


class ConcurrentWriteError(HashIndexError):
    """Another process is writing the index, or wrote it since this one opened it."""


def few(values: list[str], limit: int = 5) -> str:
    """The first ``limit`` values (quoted) for an error message, with a count of the rest."""
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", … ({len(values) - limit} more)" if len(values) > limit else "")
