"""read_dicom_dataset: the one decode path for a dataset in memory (a DICOMweb retrieve)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import write_dicom

from cxrhash.data import ImageReadError, read_dicom
from cxrhash.data.dicom import read_dicom_dataset


def _pixels() -> np.ndarray:
    return np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) % 4096


def test_same_pixels_as_the_file(tmp_path: Path) -> None:
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        path = write_dicom(
            tmp_path / f"{photometric}.dcm",
            _pixels(),
            photometric=photometric,
            WindowCenter=2000,
            WindowWidth=1000,
        )
        grey = read_dicom_dataset(pydicom.dcmread(path), "memory")
        np.testing.assert_array_equal(grey, read_dicom(path))
        assert grey.dtype == np.float32 and grey.shape == (32, 40)


def test_header_checked_before_pixels(tmp_path: Path) -> None:
    ds = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", _pixels()))
    ds.BitsStored = 20
    with pytest.raises(ImageReadError, match="Bits Stored is 20") as caught:
        read_dicom_dataset(ds, "dicomweb-instance-1.2.3")
    assert "dicomweb-instance-1.2.3" in str(caught.value)


def test_no_pixels_or_syntax_refused(tmp_path: Path) -> None:
    ds = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", _pixels()))
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(ImageReadError, match="no Transfer Syntax UID"):
        read_dicom_dataset(ds, "x")
    del ds.PixelData
    with pytest.raises(ImageReadError, match="no pixel data"):
        read_dicom_dataset(ds, "x")


def test_truncated_pixels_are_an_image_read_error(tmp_path: Path) -> None:
    ds = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", _pixels()))
    ds.PixelData = ds.PixelData[:100]
    with pytest.raises(ImageReadError, match="cannot decode DICOM pixel data"):
        read_dicom_dataset(ds, "x")
