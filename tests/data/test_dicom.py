"""The DICOM decode path against hand-worked DICOM formulas and pydicom's own files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import write_dicom  # shared with the CLI tests
from pydicom.dataset import Dataset

from cxrhash.data.dicom import read_dicom
from cxrhash.data.images import ImageReadError, load_image

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


RAMP12 = np.array([[1000, 1535, 1536, 2048], [2559, 2560, 4095, 0]], dtype=np.uint16)


def test_window_clips_as_the_dicom_linear_formula(tmp_path: Path) -> None:
    # LINEAR window, c=2048, w=1025: c-0.5=2047.5, w-1=1024, so values <= 1535.5 → 0,
    # > 2559.5 → 1, otherwise (x - 2047.5)/1024 + 0.5.
    path = write_dicom(tmp_path / "w.dcm", RAMP12, WindowCenter=2048, WindowWidth=1025)
    expected = np.array(
        [[0.0, 0.0, 0.5 / 1024, 0.5 + 0.5 / 1024], [1.0 - 0.5 / 1024, 1.0, 1.0, 0.0]]
    )
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


def test_window_applies_after_rescale(tmp_path: Path) -> None:
    # modality = 2x - 1000; window c=1000, w=2001 → (m - 999.5)/2000 + 0.5.
    pixels = np.array([[0, 500], [1000, 1500]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "r.dcm",
        pixels,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=1000,
        WindowWidth=2001,
    )
    expected = np.array([[0.0, 0.5 / 2000], [0.5 + 0.5 / 2000, 1.0]])
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


def test_voi_lut_sequence_maps_and_scales_by_its_entries(tmp_path: Path) -> None:
    # 4 entries from modality value 100: <=100 → entry 0, 101 → 1, 102 → 2, >=103 → 3;
    # scaled by the first and last entries (0 and 4000).
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 100, 16])  # LUT Descriptor
    item.add_new(0x00283006, "US", [0, 1000, 3000, 4000])  # LUT Data
    pixels = np.array([[0, 100, 101], [102, 103, 4095]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "lut.dcm", pixels, VOILUTSequence=[item], WindowCenter=0, WindowWidth=1
    )
    np.testing.assert_allclose(read_dicom(path), [[0, 0, 0.25], [0.75, 1, 1]], atol=1e-7)


def test_no_window_uses_min_max_of_modality_values(tmp_path: Path) -> None:
    pixels = np.array([[100, 200], [300, 300]], dtype=np.uint16)
    path = write_dicom(tmp_path / "m.dcm", pixels, RescaleSlope=3, RescaleIntercept=-50)
    np.testing.assert_allclose(read_dicom(path), [[0.0, 0.5], [1.0, 1.0]], atol=1e-7)


@pytest.mark.parametrize(
    ("bits", "window"),
    [
        (12, {}),
        (12, {"WindowCenter": 2048, "WindowWidth": 1025}),
        (16, {}),
        (16, {"WindowCenter": 30000, "WindowWidth": 20000}),
    ],
)
def test_monochrome1_is_exactly_one_minus_monochrome2(
    tmp_path: Path, bits: int, window: dict
) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 2**bits, size=(9, 7)).astype(np.uint16)
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", pixels, bits=bits, **window))
    m1 = read_dicom(
        write_dicom(tmp_path / "m1.dcm", pixels, bits=bits, photometric="MONOCHROME1", **window)
    )
    assert m1.dtype == np.float32 and m1.shape == (9, 7)
    assert np.array_equal(m1, np.float32(1.0) - m2)
    assert m2.min() >= 0.0 and m2.max() <= 1.0


def test_presentation_inverse_with_monochrome1_inverts_once(tmp_path: Path) -> None:
    pixels = np.array([[0, 1000], [3000, 4095]], dtype=np.uint16)
    m2 = read_dicom(write_dicom(tmp_path / "a.dcm", pixels))
    both = read_dicom(
        write_dicom(
            tmp_path / "b.dcm", pixels, photometric="MONOCHROME1", PresentationLUTShape="INVERSE"
        )
    )
    m2_inverse = read_dicom(write_dicom(tmp_path / "c.dcm", pixels, PresentationLUTShape="INVERSE"))
    assert np.array_equal(both, np.float32(1.0) - m2)
    assert np.array_equal(m2_inverse, np.float32(1.0) - m2)


def test_multiframe_gives_first_frame(tmp_path: Path) -> None:
    frames = np.stack([np.array([[0, 100], [200, 400]]), np.full((2, 2), 7)]).astype(np.uint16)
    out = read_dicom(write_dicom(tmp_path / "f.dcm", frames))
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]], atol=1e-7)


def test_eight_bit_rgb_becomes_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((1, 2, 3), dtype=np.uint8)
    rgb[0, 0] = [255, 0, 0]
    rgb[0, 1] = [255, 255, 255]
    out = read_dicom(write_dicom(tmp_path / "c.dcm", rgb, bits=8, photometric="RGB"))
    np.testing.assert_allclose(out, [[0.299, 1.0]], atol=1e-6)


def test_signed_sixteen_bit_is_scaled_to_unit_range(tmp_path: Path) -> None:
    pixels = np.array([[-1000, 0], [1000, 3000]], dtype=np.int16)
    out = read_dicom(write_dicom(tmp_path / "s.dcm", pixels, bits=16, signed=True))
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]], atol=1e-7)


def test_load_image_dispatches_on_dicm_magic(tmp_path: Path) -> None:
    pixels = np.array([[0, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "image.dcm", pixels)
    renamed = path.rename(tmp_path / "no_suffix")
    np.testing.assert_allclose(load_image(renamed), [[0.0, 1.0]])


def test_unsupported_bit_depth_and_non_dicom_raise_naming_the_file(tmp_path: Path) -> None:
    ds_path = write_dicom(tmp_path / "four.dcm", np.array([[1, 2]]), bits=16, BitsStored=4)
    with pytest.raises(ImageReadError, match="four.dcm.*Bits Stored is 4"):
        read_dicom(ds_path)
    fake = tmp_path / "fake.dcm"
    fake.write_text("not dicom at all")
    with pytest.raises(ImageReadError, match="fake.dcm") as info:
        load_image(fake)
    assert info.value.path == fake


def test_pydicom_ct_small_decodes_to_min_max_of_hounsfield() -> None:
    path = PYDICOM_FILES / "CT_small.dcm"
    if not path.is_file():
        pytest.skip(f"pydicom test file {path} not found")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = (hu - hu.min()) / (hu.max() - hu.min())
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


def test_pydicom_cr_monochrome1_file_follows_window_then_inversion() -> None:
    path = PYDICOM_FILES / "dicomdirtests" / "77654033" / "CR1" / "6154"
    if not path.is_file():
        pytest.skip(f"pydicom MONOCHROME1 CR test file {path} not found")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    modality = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    center, width = float(ds.WindowCenter) - 0.5, float(ds.WindowWidth) - 1.0
    shown = np.clip((modality - center) / width + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(read_dicom(path), 1.0 - shown, atol=1e-6)
