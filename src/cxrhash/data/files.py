"""What an image file is before any decoder opens it: a readable regular file, DICOM or not."""

from __future__ import annotations

from pathlib import Path

from cxrhash.data.errors import ImageReadError

DICOM_SUFFIXES = (".dcm", ".dicom")
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"


def check_regular_file(path: Path) -> None:
    """Raise :class:`ImageReadError` unless ``path`` is an existing, non-empty regular file.

    A FIFO or device would block or never end when read, so only regular files pass.
    """
    try:
        if path.is_dir():
            raise ImageReadError(path, "is a directory, not an image file")
        if not path.exists():
            raise ImageReadError(path, "file not found")
        if not path.is_file():
            raise ImageReadError(path, "is not a regular file (a device, FIFO or socket?)")
        if path.stat().st_size == 0:
            raise ImageReadError(path, "file is empty")
    except OSError as err:  # e.g. a path component is not searchable
        raise ImageReadError(path, f"cannot open ({err.strerror or err})") from err


def is_dicom(path: Path) -> bool:
    """True for a ``.dcm``/``.dicom`` name or the ``DICM`` magic at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as handle:
        head = handle.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    return head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC
