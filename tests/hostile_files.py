"""Generators of hostile files, shared by the per-reader tests (``tests/data``) and the
end-to-end corpus (``tests/test_hostile_inputs.py``): small files that declare sizes or
lengths which would cost gigabytes if a reader believed them (issue #11)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from conftest import dx_dataset
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
)

PIXEL_DATA = 0x7FE00010
TWO_GIB = 2**31
MIB = 2**20


def grey_dataset(syntax: str, rows: int, columns: int) -> Dataset:
    """A 12-bit MONOCHROME2 DX dataset of ``rows × columns`` with no pixel data yet."""
    ds = dx_dataset(syntax)
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    return ds


def _head_and_body(ds: Dataset) -> tuple[bytes, bytes]:
    """Preamble + file meta, and the dataset (no pixel data yet) in explicit VR little endian."""
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    return head.getvalue(), body.getvalue()


def _element(tag: int, vr: bytes, length: int) -> bytes:
    """Header of an explicit-VR element with a 4-byte length (OB, OW, SQ)."""
    return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, length)


def _zeros(comp: zlib._Compress, n: int) -> bytes:
    """``n`` zero bytes deflated: one 1 MiB block compressed once and repeated, so a
    gigabyte costs milliseconds (a full flush makes each block stand alone)."""
    before = comp.flush(zlib.Z_FULL_FLUSH)  # what earlier calls left pending
    block = comp.compress(bytes(MIB)) + comp.flush(zlib.Z_FULL_FLUSH)
    rest = comp.compress(bytes(n % MIB)) + comp.flush(zlib.Z_FULL_FLUSH)
    return before + block * (n // MIB) + rest


def write_deflated(
    path: Path,
    rows: int,
    columns: int,
    *,
    blob_before: int = 0,
    pixel_length: int | None = None,
    pixel_bytes: int | None = None,
) -> Path:
    """A deflated DICOM of zero pixels; optionally a zero blob before them, and pixel data
    whose declared length or actual size differ from what the header implies."""
    head, body = _head_and_body(grey_dataset(DeflatedExplicitVRLittleEndian, rows, columns))
    needed = rows * columns * 2
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [comp.compress(body)]
    if blob_before:
        parts.append(comp.compress(_element(0x00091010, b"OB", blob_before)))
        parts.append(_zeros(comp, blob_before))
    length = needed if pixel_length is None else pixel_length
    parts += [comp.compress(_element(PIXEL_DATA, b"OW", length))]
    parts += [_zeros(comp, needed if pixel_bytes is None else pixel_bytes), comp.flush()]
    path.write_bytes(head + b"".join(parts))
    return path


def write_lying_dicom(folder: Path, where: str) -> Path:
    """A 600-byte DICOM one of whose elements declares 2 GiB."""
    head, body = _head_and_body(grey_dataset(ExplicitVRLittleEndian, 4, 4))
    pixels = _element(PIXEL_DATA, b"OW", 32) + bytes(32)
    if where == "private element":
        body += _element(0x00091010, b"OB", TWO_GIB) + b"x" * 100
    elif where == "sequence":
        item = struct.pack("<HHL", 0xFFFE, 0xE000, TWO_GIB) + b"x" * 100
        body += _element(0x00283010, b"SQ", TWO_GIB) + item
    else:  # pixel data declaring 2 GiB and holding 10 bytes of the 32 it needs
        pixels = _element(PIXEL_DATA, b"OW", TWO_GIB) + bytes(10)
    path = folder / f"{where.replace(' ', '_')}.dcm"
    path.write_bytes(head + body + pixels)
    return path


def write_corrupt_jpeg2000_dicom(path: Path) -> Path:
    """A DICOM whose JPEG 2000 pixel data is garbage (decoders log tracebacks on it)."""
    ds = grey_dataset(JPEG2000Lossless, 64, 64)
    ds.PixelData = encapsulate([b"garbage, not a JPEG 2000 codestream" * 4])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit black PNG of any size, written row block by row block (a zip bomb)."""
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed zero bits
    block = 1000
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * block) for _ in range(height // block)]
    parts += [comp.compress(row * (height % block)), comp.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
    return path
