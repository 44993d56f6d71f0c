"""File-likes through which pydicom reads a DICOM file without trusting its declared lengths.

pydicom reads an element by asking for as many bytes as the element declares,
so a 1 kB file declaring a 2 GiB element makes Python allocate 2 GiB; and it
inflates the whole of a deflated dataset before reading a byte of it, so a
400 kB file can cost gigabytes. :class:`ClampedReader` never asks the file for
more than it holds; :class:`InflatingReader` inflates only as far as pydicom
reads, and refuses to go past a limit.
"""

from __future__ import annotations

import os
import zlib
from typing import BinaryIO

_CHUNK = 1 << 16
# Inflated bytes kept behind the read position, for pydicom's short rewinds.
_KEEP = 1 << 20


class InflateLimitError(Exception):
    """A deflated dataset expands past the number of bytes allowed for it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"deflated data expands past {limit:,} bytes")


class ClampedReader:
    """A binary file whose ``read(n)`` never asks for more bytes than remain in it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.size = os.fstat(handle.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        remaining = max(0, self.size - self._handle.tell())
        if size is None or size < 0 or size > remaining:
            size = remaining
        return self._handle.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def past_end(self) -> bool:
        """True once a seek went beyond the end of the file (a declared length overran it)."""
        return self.tell() > self.size


class InflatingReader:
    """The raw-deflate data of a file from offset ``start``, inflated as far as it is read.

    Reading or seeking past ``limit`` inflated bytes, while the data goes on,
    raises :class:`InflateLimitError`; the limit may be moved between reads.
    Seeking back more than the last MiB restarts inflation from ``start``.
    """

    def __init__(self, handle: BinaryIO, start: int, limit: int) -> None:
        self._handle = handle
        self._start = start
        self.limit = limit
        self._restart()

    def _restart(self) -> None:
        self._handle.seek(self._start)
        self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = bytearray()
        self._buf_pos = 0  # inflated offset of _buf[0]
        self._pos = 0
        self._ended = False

    def _fill(self, end: int) -> None:
        """Inflate until the buffer reaches ``end`` or the data ends."""
        while self._buf_pos + len(self._buf) < end and not self._ended:
            if self._buf_pos + len(self._buf) > self.limit:
                raise InflateLimitError(self.limit)
            data = self._zlib.unconsumed_tail or self._handle.read(_CHUNK)
            if data:
                self._buf += self._zlib.decompress(data, _CHUNK)
            else:
                self._buf += self._zlib.flush()
            self._ended = not data or self._zlib.eof
            drop = min(len(self._buf), self._pos - _KEEP - self._buf_pos)
            if drop > 0:
                del self._buf[:drop]
                self._buf_pos += drop
        if self._buf_pos + len(self._buf) > self.limit and end > self.limit:
            raise InflateLimitError(self.limit)

    def read(self, size: int | None = -1) -> bytes:
        end = self.limit + 1 if size is None or size < 0 else self._pos + size
        self._fill(end)
        start = self._pos - self._buf_pos
        data = bytes(self._buf[start : start + (end - self._pos)])
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence != os.SEEK_SET:
            raise OSError("an inflating reader seeks only from the start or the current position")
        if offset < 0:
            raise OSError(f"cannot seek to {offset}")
        if offset < self._buf_pos:
            self._restart()
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self._pos

    def past_end(self) -> bool:
        """True once a seek went beyond the end of the inflated data."""
        self._fill(self._pos)
        return self._ended and self._pos > self._buf_pos + len(self._buf)
