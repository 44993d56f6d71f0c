"""Reading an upload once: the network input, the preview's values and window, the Patient
ID, and the DICOM header de-identified as it is read (issue #13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import dx_dataset, write_dicom
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from cxrhash.data.deidentify import DECODER_GROUPS, deidentify_header
from cxrhash.data.dicom import read_dicom, read_dicom_film
from cxrhash.data.images import ImageReadError, load_resized
from cxrhash.data.uploads import PREVIEW_SIDE, load_upload

IDENTIFYING = {
    "PatientName": "DOE^JANE",
    "PatientID": "MRN0012345",
    "PatientBirthDate": "19700101",
    "PatientAddress": "1 Main Street Springfield",
    "PatientComments": "lives with her sister Maud",
    "OtherPatientIDs": "OTHER-777",
    "InstitutionName": "St Elsewhere Hospital",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "AccessionNumber": "ACC424242",
    "StudyDate": "20240305",
    "StudyDescription": "CHEST PA for Jane Doe",
}


def _ramp(rows: int = 40, columns: int = 50) -> np.ndarray:
    return (np.arange(rows * columns).reshape(rows, columns) % 4096).astype(np.uint16)


def test_a_png_preview_keeps_the_order_of_values_and_the_network_input(tmp_path: Path):
    grey = np.random.default_rng(0).integers(20, 230, (300, 200)).astype(np.uint8)
    path = tmp_path / "film.png"
    Image.fromarray(grey).save(path)
    up = load_upload(path, 32)
    assert np.array_equal(up.image, load_resized(path, 32)) and up.patient_id is None
    p = up.preview
    assert p.pixels.shape == (300, 200) and p.pixels.dtype == np.uint16 and not p.dicom
    # one preview value per file value, increasing: a linear map of the file's values
    pairs = sorted(set(zip(grey.ravel().tolist(), p.pixels.ravel().tolist(), strict=True)))
    assert [v for v, _ in pairs] == sorted({v for v, _ in pairs})
    assert np.all(np.diff([q for _, q in pairs]) > 0)
    assert (p.pixels.min(), p.pixels.max()) == (0, 65535)
    # the default window shows the file as it is: 0 and 255 at its ends
    span = 229 - 20
    low = p.window_center - p.window_width / 2
    assert low == pytest.approx((0 - 20) / span * 65535, rel=1e-6)
    assert p.window_width == pytest.approx(255 / span * 65535, rel=1e-6)


def test_a_large_film_is_previewed_at_most_preview_side(tmp_path: Path):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((1200, 600), np.uint8)).save(path)
    assert load_upload(path, 32).preview.pixels.shape == (PREVIEW_SIDE, PREVIEW_SIDE // 2)


def test_a_dicom_preview_carries_the_modality_values_and_the_files_window(tmp_path: Path):
    pixels = _ramp()
    path = write_dicom(
        tmp_path / "w.dcm",
        pixels,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=[40, 300],
        WindowWidth=[400, 1500],
        **IDENTIFYING,
    )
    up = load_upload(path, 32)
    assert up.patient_id == "MRN0012345"
    assert np.array_equal(up.image, load_resized(path, 32))  # the same network input
    p = up.preview
    assert p.dicom and not p.inverted and p.pixels.shape == pixels.shape
    modality = pixels * 2.0 - 1024
    low, span = modality.min(), np.ptp(modality)
    expected = np.rint((modality - low) * 65535 / span)
    assert np.abs(p.pixels.astype(np.int64) - expected).max() <= 1  # float32 rounding
    assert p.window_center == pytest.approx((40 - low) * 65535 / span)
    assert p.window_width == pytest.approx(400 * 65535 / span)


def test_monochrome1_previews_inverted_and_without_window_shows_the_full_range(tmp_path):
    path = write_dicom(tmp_path / "m1.dcm", _ramp(), photometric="MONOCHROME1")
    p = load_upload(path, 32).preview
    assert p.inverted and p.window_center == pytest.approx(65535 / 2)
    assert p.window_width == pytest.approx(65535)


def test_deidentification_leaves_only_what_the_decoder_reads(tmp_path: Path):
    path = write_dicom(tmp_path / "phi.dcm", _ramp(), **IDENTIFYING)
    ds = pydicom.dcmread(path)
    ds.add_new(0x00091010, "LO", "private MRN0012345")
    deidentify_header(ds)
    assert {tag.group for tag in ds.keys()} <= DECODER_GROUPS
    text = str(ds) + str(ds.file_meta)
    leaks = [v for v in IDENTIFYING.values() for part in v.split("^") if part in text]
    assert not leaks
    assert ds.Rows == 40 and ds.BitsStored == 12  # what decoding needs is kept


def test_an_upload_decodes_as_the_training_path_does(tmp_path: Path):
    path = write_dicom(tmp_path / "same.dcm", _ramp(), WindowCenter=1000, WindowWidth=800)
    film = read_dicom_film(path)
    assert np.array_equal(film.grey, read_dicom(path))
    assert film.window == (1000.0, 800.0)


def test_a_film_without_patient_id_and_a_bad_upload(tmp_path: Path):
    path = write_dicom(tmp_path / "anon.dcm", _ramp())
    assert load_upload(path, 32).patient_id is None
    ds = dx_dataset(ExplicitVRLittleEndian)
    ds.PatientName = "DOE^JANE"
    bad = tmp_path / "nopix.dcm"
    ds.save_as(bad, enforce_file_format=True)
    with pytest.raises(ImageReadError) as err:
        load_upload(bad, 32)
    assert "DOE" not in str(err.value)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError):
        load_upload(tmp_path / "empty.png", 32)
