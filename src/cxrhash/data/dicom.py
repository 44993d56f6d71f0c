"""The one DICOM decode path for radiographs (CR/DX).

stored pixels → modality LUT (Rescale Slope/Intercept or Modality LUT) →
VOI LUT (VOI LUT Sequence, else Window Centre/Width, else min–max of the
modality values) → presentation (inversion) → float32 in [0, 1], where 1 is
the brightest displayed value (bone white, air black).

Inversion happens exactly once: when Photometric Interpretation is
MONOCHROME1 *or* Presentation LUT Shape is INVERSE. The DX IOD requires
INVERSE together with MONOCHROME1 (both describe the same single inversion),
so the two together still invert once, not twice. MONOCHROME1 with IDENTITY
(non-conformant) is inverted because the photometric interpretation describes
the stored pixels. Colour images (RGB, YBR_*, PALETTE COLOR) skip the
grey-scale LUTs and are converted to luminance.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from cxrhash.data.images import ImageReadError

LOG = logging.getLogger(__name__)

_MIN_BITS, _MAX_BITS = 8, 16
# Far outside any 8–16-bit modality value: pushing these through a window
# yields its lowest and highest possible outputs (the VOI output range).
_WINDOW_PROBE = np.array([-(2**31), 2**31], dtype=np.int64)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def read_dicom(path: str | Path) -> np.ndarray:
    """Decode a DICOM radiograph to a float32 ``H×W`` array in [0, 1].

    Multi-frame files give their first frame.

    Raises:
        ImageReadError: The file is missing, not DICOM, has no or undecodable
            pixel data, or a bit depth outside 8–16.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError as err:
        raise ImageReadError(path, "file not found") from err
    except Exception as err:  # pydicom raises many types for broken files
        raise ImageReadError(path, f"not a readable DICOM file ({err})") from err
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM file has no pixel data")
    bits = int(ds.get("BitsStored", 0) or 0)
    if not _MIN_BITS <= bits <= _MAX_BITS:
        raise ImageReadError(
            path, f"Bits Stored is {bits}; expected {_MIN_BITS}–{_MAX_BITS} for a radiograph"
        )
    try:
        arr = pixel_array(ds, index=0)
    except Exception as err:
        raise ImageReadError(path, f"cannot decode DICOM pixel data ({err})") from err

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    monochrome = photometric.startswith("MONOCHROME")
    if monochrome:
        grey = _grey_to_unit(arr, ds)
    else:
        grey = _colour_to_unit(arr, ds, photometric, bits)
    if grey.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D grey frame, decoded shape {grey.shape}")
    grey = np.clip(grey, 0.0, 1.0).astype(np.float32)
    if monochrome and (photometric == "MONOCHROME1" or _presentation_inverse(ds)):
        # In float32, so MONOCHROME1 and MONOCHROME2 copies decode to exactly 1 - x.
        grey = np.float32(1.0) - grey
    return grey


def _presentation_inverse(ds: pydicom.Dataset) -> bool:
    return str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"


def _grey_to_unit(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Modality LUT then VOI LUT/window, scaled to [0, 1] (before presentation)."""
    values = apply_modality_lut(arr, ds)
    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if not has_lut and not has_window:
        return _min_max(values)
    probe = _WINDOW_PROBE
    if has_lut:
        # A VOI LUT maps integer modality values in [first, first + entries - 1];
        # values outside map to the end entries, so clipping changes nothing
        # but keeps pydicom's uint16 index arithmetic from wrapping around.
        entries, first, _ = ds.VOILUTSequence[0].LUTDescriptor
        first_last = np.array([first, first + (entries or 2**16) - 1], dtype=np.int64)
        values = np.clip(np.rint(values).astype(np.int64), *first_last)
        probe = first_last
    with warnings.catch_warnings(), np.errstate(over="ignore"):
        warnings.simplefilter("ignore", UserWarning)
        shown = apply_voi_lut(values, ds).astype(np.float64)
        low, high = apply_voi_lut(probe.copy(), ds).astype(np.float64)
    if high == low:
        return np.zeros_like(shown)
    return (shown - low) / (high - low)


def _colour_to_unit(
    arr: np.ndarray, ds: pydicom.Dataset, photometric: str, bits: int
) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        bits = 16 if arr.dtype == np.uint16 else 8
    if arr.ndim != 3 or arr.shape[-1] != 3:
        return _min_max(arr.astype(np.float64))
    # pydicom already converts YBR_* to RGB when decoding (as_rgb=True).
    return (arr.astype(np.float64) @ _LUMA) / float(2**bits - 1)


def _min_max(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros_like(values)
    return (values - low) / (high - low)
