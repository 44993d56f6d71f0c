"""One array of a NumPy ``.npz`` archive, memory-mapped when stored, checked before loading.

A member's ``.npy`` header declares its shape; numpy allocates what it declares
before reading, so a compressed member's declaration is checked against the bytes
it holds first (issue #11).
"""

from __future__ import annotations

import logging
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from cxrhash.data.errors import DataFormatError

LOG = logging.getLogger(__name__)

_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _memmap_stored(npz_path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """Memory-map an uncompressed ``.npz`` member, or ``None`` if it cannot be."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with npz_path.open("rb") as handle:
        # Zip local file header: 30 fixed bytes, then the name and extra field.
        handle.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(handle.read(4), dtype="<u2")
        handle.seek(info.header_offset + 30 + int(name_len) + int(extra_len))
        read_header = _NPY_HEADER_READERS.get(np.lib.format.read_magic(handle))
        if read_header is None:
            return None
        shape, fortran_order, dtype = read_header(handle)
        offset = handle.tell()
    if fortran_order or dtype.hasobject:
        return None
    return np.memmap(npz_path, dtype=dtype, mode="r", shape=shape, offset=offset)


def npz_member(npz_path: Path, key: str) -> np.ndarray:
    """One array of an ``.npz``: memory-mapped when stored uncompressed, else loaded."""
    try:
        return _npz_array(npz_path, key)
    except DataFormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise DataFormatError(
            f"{npz_path}: not a MedMNIST .npz file; expected a zip archive of .npy arrays "
            f"such as chestmnist.npz ({err})"
        ) from err
    except (ValueError, OSError, EOFError, zlib.error) as err:
        raise DataFormatError(f"{npz_path}: cannot read the array {key!r} ({err})") from err


def _npz_array(npz_path: Path, key: str) -> np.ndarray:
    member = f"{key}.npy"
    with zipfile.ZipFile(npz_path) as archive:
        names = archive.namelist()
        if member not in names:
            keys = sorted(n.removesuffix(".npy") for n in names)
            raise DataFormatError(f"{npz_path}: no array {key!r}; the file has {keys}")
        mapped = _memmap_stored(npz_path, archive.getinfo(member))
        if mapped is not None:
            return mapped
        info = archive.getinfo(member)
        LOG.info("%s: %s is compressed; loading it into memory", npz_path, key)
        with archive.open(member) as handle:
            read_header = _NPY_HEADER_READERS.get(np.lib.format.read_magic(handle))
            if read_header is None:
                raise DataFormatError(f"{npz_path}: {member} is not a .npy array")
            shape, fortran_order, dtype = read_header(handle)
            # numpy allocates what the header declares before reading: check it first.
            declared = math.prod(shape) * dtype.itemsize
            if dtype.hasobject or declared > info.file_size:
                raise DataFormatError(
                    f"{npz_path}: {member} declares {declared:,} bytes of {dtype} in shape "
                    f"{shape}, but holds {info.file_size:,}; not a MedMNIST array"
                )
            count = math.prod(shape)
            data = np.frombuffer(handle.read(declared), dtype=dtype, count=count)
            return data.reshape(shape, order="F" if fortran_order else "C")
