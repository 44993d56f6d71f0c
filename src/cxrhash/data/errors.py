"""The errors of the data layer, and the printable form of the paths they name.

They live apart from the modules that raise them so that image decoding, DICOM
decoding, label files and readers can all raise them without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def printable_path(path: str | Path) -> str:
    """``path`` as text that any terminal or UTF-8 log can take.

    Bytes of a file name that are not UTF-8 (``b"\\xff"`` on Linux) become
    ``\\xff`` rather than the lone surrogates Python decodes them to, which
    cannot be encoded and would crash a print.
    """
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class ImageReadError(ValueError):
    """An image file is missing, empty, truncated, corrupt or of an unsupported kind.

    Attributes:
        path: The file.
        reason: What went wrong, in words.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {printable_path(self.path)}: {reason}")


class DataFormatError(ValueError):
    """A label file or dataset description does not have the expected shape."""


class DicomWebError(ConnectionError):
    """A DICOMweb server cannot be used at all: unreachable, refusing the credentials, or
    answering a listing with something that is not one. Names the server's URL, never a
    password or token. (An ``OSError``: the CLI reports it in one line, as a user error.)"""


class InstanceError(Exception):
    """One DICOMweb instance could not be fetched or decoded; the listing goes on.

    Attributes:
        sop_uid: The instance's SOP Instance UID.
        reason: What went wrong, in words (no patient data).
    """

    def __init__(self, sop_uid: str, reason: str) -> None:
        self.sop_uid = sop_uid
        self.reason = reason
        super().__init__(f"DICOMweb instance {sop_uid}: {reason}")
