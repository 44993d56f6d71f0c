"""The bounded file-likes pydicom reads DICOM files through."""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from cxrhash.data.dicom_io import ClampedReader, InflateLimitError, InflatingReader


def _deflated(tmp_path: Path, data: bytes, prefix: bytes = b"HEAD") -> Path:
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    path = tmp_path / "data.bin"
    path.write_bytes(prefix + comp.compress(data) + comp.flush())
    return path


def test_inflating_reader_reads_and_seeks_like_the_inflated_bytes(tmp_path: Path) -> None:
    """Same answers as a BytesIO of the whole data, across chunk boundaries, forward
    skips past the kept window and seeks back before it (which restart inflation)."""
    data = np.random.default_rng(0).integers(0, 256, size=3 * 2**20 + 123, dtype=np.uint8)
    data = data.tobytes()
    with _deflated(tmp_path, data).open("rb") as handle:
        reader = InflatingReader(handle, 4, limit=len(data))
        expected = io.BytesIO(data)
        steps = [("read", 100), ("seek", 70_000), ("read", 200_000), ("seek", 3_000_000)]
        steps += [("read", 50), ("seek", 10), ("read", 1000), ("cur", -8), ("read", 16)]
        steps += [("seek", len(data) - 5), ("read", 100), ("read", 100)]
        for op, value in steps:
            if op == "read":
                assert reader.read(value) == expected.read(value)
            elif op == "seek":
                assert reader.seek(value) == expected.seek(value)
            else:
                assert reader.seek(value, os.SEEK_CUR) == expected.seek(value, os.SEEK_CUR)
            assert reader.tell() == expected.tell()
        assert not reader.past_end()
        reader.seek(len(data) + 10)
        assert reader.past_end()


def test_inflating_reader_refuses_to_go_past_its_limit(tmp_path: Path) -> None:
    with _deflated(tmp_path, bytes(10 * 2**20)).open("rb") as handle:
        reader = InflatingReader(handle, 4, limit=2**20)
        assert reader.read(2**20) == bytes(2**20)  # up to the limit is fine
        with pytest.raises(InflateLimitError, match="past 1,048,576 bytes"):
            reader.read(1)
        reader.limit = 20 * 2**20  # data that ends before the limit just ends
        reader.seek(0)
        assert len(reader.read(2**31)) == 10 * 2**20


def test_clamped_reader_never_asks_for_more_than_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "small.bin"
    path.write_bytes(b"0123456789")
    with path.open("rb") as handle:
        reader = ClampedReader(handle)
        reader.seek(4)
        assert reader.read(2**31) == b"456789"
        assert reader.read(5) == b""
        reader.seek(2**31)
        assert reader.past_end() and reader.read(2**31) == b""
