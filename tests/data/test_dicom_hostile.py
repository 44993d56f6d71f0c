"""Hostile DICOM files (issue #11): declared sizes and lengths that would cost gigabytes,
and decoder noise. Each must give one ImageReadError line, quickly, in little memory."""

from __future__ import annotations

import logging
import re
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dicom
from hostile_files import (
    MIB,
    TWO_GIB,
    write_corrupt_jpeg2000_dicom,
    write_deflated,
    write_lying_dicom,
)
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
)

from cxrhash.data.dicom import read_dicom
from cxrhash.data.images import ImageReadError, load_image

pytestmark = pytest.mark.usefixtures("default_pixel_limit")


def _bounded(read: Callable[[], object], seconds: float = 5.0) -> tuple[ImageReadError, int]:
    """The ImageReadError ``read`` raises and the peak of memory traced meanwhile."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageReadError) as info:
            read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < seconds
    return info.value, peak


def test_a_deflated_14000_square_dicom_is_refused_before_inflating(tmp_path: Path) -> None:
    """392 MB of pixels in a 400 kB file: it used to take 5.7 GB and 28 s."""
    path = write_deflated(tmp_path / "bomb.dcm", 14000, 14000)
    assert path.stat().st_size < 500_000
    error, peak = _bounded(lambda: load_image(path), seconds=2.0)
    assert error.reason == (
        "too many pixels: 14000 rows × 14000 columns × 1 frame × 1 sample = 196,000,000 values, "
        "over the limit of 100,000,000 (CXRHASH_MAX_PIXELS changes it)"
    )
    assert peak < 20 * MIB


def test_a_normal_16_bit_2000_square_dicom_still_reads(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 65536, size=(2000, 2000), dtype=np.uint16)
    out = load_image(write_dicom(tmp_path / "big.dcm", pixels, bits=16))
    low, high = float(pixels.min()), float(pixels.max())
    np.testing.assert_allclose(out, (pixels - low) / (high - low), atol=1e-6)


def test_a_deflated_dicom_decodes_like_its_uncompressed_copy(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 4096, size=(48, 64), dtype=np.uint16)
    plain = write_dicom(tmp_path / "plain.dcm", pixels, WindowCenter=2048, WindowWidth=4096)
    deflated = write_dicom(tmp_path / "deflated.dcm", pixels, WindowCenter=2048, WindowWidth=4096)
    ds = dcmread(deflated)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(deflated, enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom(deflated), read_dicom(plain))


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("private element", "truncated or corrupt: an element claims more bytes than the file"),
        ("sequence", "truncated or corrupt: an element claims more bytes than the file"),
        ("pixel data", "cannot decode DICOM pixel data \\(The number of bytes of pixel data"),
    ],
)
def test_an_element_declaring_2_gib_is_a_read_error_without_allocating_it(
    tmp_path: Path, where: str, reason: str
) -> None:
    """pydicom asks the file for as many bytes as an element declares, and Python
    allocates them before reading: 2 GiB for a 600-byte file."""
    path = write_lying_dicom(tmp_path, where)
    error, peak = _bounded(lambda: load_image(path))
    assert peak < 20 * MIB
    assert re.match(reason, error.reason)
    assert error.path == path


def test_a_deflated_element_declaring_2_gib_is_a_read_error(tmp_path: Path) -> None:
    path = write_deflated(tmp_path / "lie.dcm", 64, 64, pixel_length=TWO_GIB, pixel_bytes=100)
    error, peak = _bounded(lambda: load_image(path))
    assert "The number of bytes of pixel data is less than expected" in error.reason
    assert peak < 20 * MIB


@pytest.mark.parametrize(
    ("layout", "reason"),
    [
        ({"blob_before": 300 * MIB}, "deflated header expands past 67,108,864 bytes"),
        (
            {"pixel_length": TWO_GIB, "pixel_bytes": 300 * MIB},
            "deflated data runs past the 8,192 pixel bytes its header declares",
        ),
    ],
    ids=["blob before the pixels", "pixel data longer than the image"],
)
def test_deflated_data_beyond_what_the_header_allows_is_refused(
    tmp_path: Path, layout: dict, reason: str
) -> None:
    """Small images whose deflated stream hides 300 MiB of zeros."""
    path = write_deflated(tmp_path / "hidden.dcm", 64, 64, **layout)
    error, peak = _bounded(lambda: load_image(path))
    assert error.reason.startswith(reason)
    assert peak < 20 * MIB


def test_a_corrupt_jpeg2000_dicom_shows_only_our_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """pydicom logs a decoder traceback through its ``pydicom`` logger; with the CLI's
    logging set up it reached the terminal next to our message."""
    path = write_corrupt_jpeg2000_dicom(tmp_path / "j2k.dcm")
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageReadError) as info:
            load_image(path)
    assert caplog.records == []
    assert caught == []
    assert capfd.readouterr() == ("", "")
    message = str(info.value)
    assert message.startswith(f"cannot read image {path}: cannot decode DICOM pixel data (")
    assert "\n" not in message
    assert logging.getLogger("pydicom").level == logging.WARNING  # pydicom's level restored


def test_a_malformed_voi_lut_is_a_read_error_not_a_crash(tmp_path: Path) -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 100])  # LUT Descriptor: three values required
    item.add_new(0x00283006, "US", [0, 1000, 3000, 4000])  # LUT Data
    pixels = np.zeros((40, 40), dtype=np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", pixels, VOILUTSequence=[item])
    with pytest.raises(ImageReadError, match="lut.dcm: cannot apply the DICOM grey-scale LUTs"):
        load_image(path)
