"""One uploaded file, received the same way by a search and by an add: copied in chunks to a
private temporary file (mode 0600, removed after) under the size limit, hashed, and read
once by the library (:func:`cxrhash.data.uploads.load_upload`: content sniffed, a DICOM
header de-identified as it is read)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import suppress
from dataclasses import dataclass

from fastapi import UploadFile

from cxrhash.data.images import ImageReadError
from cxrhash.data.uploads import Upload, load_upload

_CHUNK = 1 << 20


class UploadRefused(Exception):
    """The file cannot be used: ``status`` (413 or 422), ``code`` and a sentence (the
    library's reason; never the upload's name)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class ReceivedFilm:
    """The film read from an upload, and the SHA-256 (hex) of the bytes sent."""

    film: Upload
    sha256: str


def receive_film(upload: UploadFile, size: int, max_bytes: int) -> ReceivedFilm:
    """Read one uploaded film at the network's ``size``.

    Raises:
        UploadRefused: 413 ``upload_too_large`` past ``max_bytes``; 422
            ``unreadable_image`` when empty or when the library cannot read it.
    """
    digest = hashlib.sha256()
    fd, name = tempfile.mkstemp(prefix="cxrhash-upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            written = 0
            while chunk := upload.file.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise UploadRefused(
                        413, "upload_too_large", f"the file is over {max_bytes} bytes"
                    )
                digest.update(chunk)
                out.write(chunk)
        if written == 0:
            raise UploadRefused(422, "unreadable_image", "the uploaded file is empty")
        try:
            return ReceivedFilm(load_upload(name, size), digest.hexdigest())
        except ImageReadError as err:
            raise UploadRefused(422, "unreadable_image", err.reason) from err
    finally:
        with suppress(FileNotFoundError):
            os.unlink(name)
