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

Files are read defensively (issue #11): the header first, through readers that
never trust a declared length (:mod:`cxrhash.data.dicom_io`), and its declared
size is checked against the shared pixel limit (:mod:`cxrhash.data.limits`)
before any pixel data is read or inflated.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import pydicom

# _read_file_meta_info is private, but pydicom.pixels uses it the same way: to read a
# file's meta group from a file-like and stop where the dataset begins.
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from cxrhash.data.deidentify import deidentify_header
from cxrhash.data.dicom_io import ClampedReader, InflateLimitError, InflatingReader
from cxrhash.data.errors import ImageReadError
from cxrhash.data.files import check_regular_file
from cxrhash.data.limits import follow_pixel_limit, pixel_limit_reason

LOG = logging.getLogger(__name__)

_MIN_BITS, _MAX_BITS = 8, 16
# Far outside any 8–16-bit modality value: pushing these through a window
# yields its lowest and highest possible outputs (the VOI output range).
_WINDOW_PROBE = np.array([-(2**31), 2**31], dtype=np.int64)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
# Float, Double Float and (integer) Pixel Data.
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
# Header values longer than this (private blobs, overlays, ICC profiles) are skipped
# unread; the decode path needs none of them (a VOI LUT is at most 128 KiB).
_DEFER_BYTES = 1 << 20
# A deflated file may inflate this far before its pixel data...
_HEADER_INFLATE_BYTES = 64 << 20
# ...and this far past the bytes its pixel data needs.
_PIXEL_INFLATE_SLACK = 1 << 16

_PYDICOM_LOG = logging.getLogger("pydicom")
_quiet_lock = threading.Lock()
_quiet_depth = 0
_pydicom_level = logging.NOTSET


def read_dicom(path: str | Path) -> np.ndarray:
    """Decode a DICOM radiograph to a float32 ``H×W`` array in [0, 1].

    Multi-frame files give their first frame. The header is read first and the
    declared size checked against the shared pixel limit
    (:mod:`cxrhash.data.limits`) before any pixel data is read or inflated.
    pydicom's own log records and warnings are held back while the file is
    read: the ImageReadError says what went wrong.

    Raises:
        ImageReadError: The file is missing, not DICOM, over the pixel limit,
            has no or undecodable pixel data, or a bit depth outside 8–16.
    """
    return _decode(Path(path), upload=False).grey


#: A DICOM UID (PS3.5 9.1): numbers without leading zeros joined by dots, ≤ 64 characters.
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+")
_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@dataclass(frozen=True)
class InstanceUids:
    """Where a film lives in a PACS: its study, series and SOP instance UIDs, and its SOP
    class (``""`` when the header has none or a malformed one)."""

    study: str
    series: str
    sop: str
    sop_class: str = ""


def instance_uids(ds: pydicom.Dataset) -> InstanceUids | None:
    """The header's three instance UIDs, or ``None`` when one is missing or not a UID."""
    values = [str(ds.get(k, "") or "").strip() for k in _UID_KEYWORDS]
    if not all(len(v) <= 64 and _UID.fullmatch(v) for v in values):
        return None
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    study, series, sop = values
    return InstanceUids(study, series, sop, sop_class if _UID.fullmatch(sop_class) else "")


@dataclass
class DicomFilm:
    """A decoded DICOM film and what a viewer needs to show it like a PACS does.

    Attributes:
        grey: The network's input, as :func:`read_dicom` returns it.
        modality: Modality values (after the modality LUT, before any window) of a
            grey-scale film, for window/level; ``None`` for a colour film.
        window: The file's first Window Centre and Width in modality units, if any.
        inverted: Whether the film displays inverted (MONOCHROME1 / INVERSE).
        patient_id: The header's Patient ID, read before de-identification so that
            the caller can pseudonymise it; never logged here.
        uids: The header's instance UIDs, read before de-identification (which replaces
            them), so that a film received from a PACS can link back to it.
    """

    grey: np.ndarray
    modality: np.ndarray | None
    window: tuple[float, float] | None
    inverted: bool
    patient_id: str | None
    uids: InstanceUids | None = None


def read_dicom_film(path: str | Path) -> DicomFilm:
    """:func:`read_dicom` for an upload: the header is de-identified
    (:func:`cxrhash.data.deidentify.deidentify_header`) as soon as it is read, before
    any pixel is decoded, keeping only the Patient ID's value for the caller; and the
    modality values and window are kept for display.

    Raises:
        ImageReadError: as :func:`read_dicom`.
    """
    return _decode(Path(path), upload=True)


def read_dicom_dataset(ds: pydicom.Dataset, source: str) -> np.ndarray:
    """:func:`read_dicom` for a dataset already in memory (a DICOMweb retrieve, say), so
    that its header, patient names and all, is never written to disk to be decoded.

    The header is checked (bit depth, declared size against the pixel limit) before
    any pixel data is decoded. ``source`` names the dataset in errors (the error's
    ``path``); it must not identify a patient.

    Raises:
        ImageReadError: as :func:`read_dicom`; also when ``ds`` has no pixel data or
            no transfer syntax.
    """
    where = Path(source)
    follow_pixel_limit()
    with _quiet_pydicom():
        if not any(int(tag) in _PIXEL_TAGS for tag in ds.keys()):
            raise ImageReadError(where, "DICOM dataset has no pixel data")
        if not getattr(ds.get("file_meta"), "TransferSyntaxUID", None):
            raise ImageReadError(where, "DICOM dataset has no Transfer Syntax UID")
        _check_header(where, ds)
        return _decode_checked(where, ds, upload=False).grey


def _decode(path: Path, *, upload: bool) -> DicomFilm:
    """The one decode path; ``upload`` adds de-identification and the display values."""
    check_regular_file(path)
    follow_pixel_limit()  # Pillow decodes JPEG and JPEG 2000 frames
    with _quiet_pydicom():
        try:
            with path.open("rb") as handle:
                ds = _read_checked(path, handle)
        except OSError as err:
            raise ImageReadError(path, f"cannot open ({err.strerror or err})") from err
        return _decode_checked(path, ds, upload=upload)


def _decode_checked(path: Path, ds: pydicom.Dataset, *, upload: bool) -> DicomFilm:
    """Decode a dataset whose header :func:`_check_header` accepted (pydicom kept quiet)."""
    patient_id = str(ds.get("PatientID", "") or "").strip() or None
    uids = instance_uids(ds)
    if upload:
        deidentify_header(ds)
    try:
        arr = pixel_array(ds, index=0)
    except Exception as err:
        # pydicom's message lists each plugin's failure on a line of its own.
        detail = " ".join(str(err).split())
        raise ImageReadError(path, f"cannot decode DICOM pixel data ({detail})") from err
    try:
        grey = _to_unit(path, arr, ds)
        modality, window = _display_values(arr, ds) if upload else (None, None)
    except ImageReadError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
        # e.g. a VOI LUT Descriptor of two values instead of three
        raise ImageReadError(path, f"cannot apply the DICOM grey-scale LUTs ({err})") from err
    inverted = _photometric(ds) == "MONOCHROME1" or _presentation_inverse(ds)
    return DicomFilm(grey, modality, window, inverted and modality is not None, patient_id, uids)


def _photometric(ds: pydicom.Dataset) -> str:
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()


def _display_values(
    arr: np.ndarray, ds: pydicom.Dataset
) -> tuple[np.ndarray | None, tuple[float, float] | None]:
    """Modality values of a grey-scale frame and the file's first window, if any."""
    if not _photometric(ds).startswith("MONOCHROME") or arr.ndim != 2:
        return None, None
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return values, None
    centre, width = ds.WindowCenter, ds.WindowWidth
    centre = centre[0] if isinstance(centre, MultiValue) else centre
    width = width[0] if isinstance(width, MultiValue) else width
    window = (float(centre), float(width))
    return values, window if all(np.isfinite(window)) and window[1] > 0 else None


def _read_checked(path: Path, handle: BinaryIO) -> pydicom.Dataset:
    """Read the header, check it, then read the pixel data: a dataset ready to decode."""
    raw = ClampedReader(handle)
    try:
        read_preamble(cast(BinaryIO, raw), force=False)
        meta = _read_file_meta_info(cast(BinaryIO, raw))
    except Exception as err:  # pydicom raises many types for broken files
        raise ImageReadError(path, f"not a readable DICOM file ({err})") from err
    syntax = meta.get("TransferSyntaxUID")
    if not syntax:
        raise ImageReadError(path, "not a readable DICOM file (no Transfer Syntax UID)")
    stream: ClampedReader | InflatingReader = raw
    if syntax == DeflatedExplicitVRLittleEndian:
        stream = InflatingReader(handle, raw.tell(), _HEADER_INFLATE_BYTES)
    layout = (syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian)
    try:
        ds = _read_header(path, stream, layout)
    except InflateLimitError as err:
        raise ImageReadError(
            path, f"deflated header expands past {err.limit:,} bytes (a decompression bomb?)"
        ) from err
    ds.file_meta = meta
    needed = _check_header(path, ds)
    if isinstance(stream, InflatingReader):
        stream.limit = stream.tell() + 12 + needed + _PIXEL_INFLATE_SLACK
    try:
        # The pixel data element(s) only: whatever follows them is never read.
        pixels = read_dataset(
            cast(BinaryIO, stream),
            *layout,
            stop_when=lambda tag, vr, length: tag not in _PIXEL_TAGS,
        )
    except InflateLimitError as err:
        raise ImageReadError(
            path, f"deflated data runs past the {needed:,} pixel bytes its header declares"
        ) from err
    except OSError:
        raise
    except Exception as err:
        raise ImageReadError(path, f"cannot read DICOM pixel data ({err})") from err
    ds.update(pixels)
    return ds


def _read_header(
    path: Path, stream: ClampedReader | InflatingReader, layout: tuple[bool, bool]
) -> pydicom.Dataset:
    """Every element before the pixel data, values over :data:`_DEFER_BYTES` skipped unread."""
    found: list[int] = []

    def at_pixels(tag: int, vr: str | None, length: int) -> bool:
        if tag in _PIXEL_TAGS:
            found.append(tag)
        return bool(found)

    try:
        ds = read_dataset(
            cast(BinaryIO, stream),
            *layout,
            stop_when=at_pixels,
            defer_size=_DEFER_BYTES,
        )
    except (InflateLimitError, OSError):
        raise
    except Exception as err:
        raise ImageReadError(path, f"not a readable DICOM file ({err})") from err
    if not found and stream.past_end():
        raise ImageReadError(
            path, "truncated or corrupt: an element claims more bytes than the file holds"
        )
    if not found:
        raise ImageReadError(path, "DICOM file has no pixel data")
    return ds


def _check_header(path: Path, ds: pydicom.Dataset) -> int:
    """Refuse a bit depth or declared size we will not decode; return the native pixel bytes."""
    try:
        bits = int(ds.get("BitsStored", 0) or 0)
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = max(1, int(ds.get("NumberOfFrames") or 1))
        samples = max(1, int(ds.get("SamplesPerPixel") or 1))
        allocated = int(ds.get("BitsAllocated") or 16)
    except Exception as err:  # a value pydicom cannot convert
        raise ImageReadError(path, f"unreadable image size in the DICOM header ({err})") from err
    if not _MIN_BITS <= bits <= _MAX_BITS:
        raise ImageReadError(
            path, f"Bits Stored is {bits}; expected {_MIN_BITS}–{_MAX_BITS} for a radiograph"
        )
    if rows <= 0 or columns <= 0:
        raise ImageReadError(path, f"DICOM header declares {rows} rows × {columns} columns")
    reason = pixel_limit_reason(rows, columns, frames, samples)
    if reason is not None:
        raise ImageReadError(path, reason)
    return -(-rows * columns * frames * samples * allocated // 8)


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Hold back pydicom's log records and warnings (audible again at this module's DEBUG).

    pydicom logs a traceback when a plugin cannot decode a frame and warns
    about non-conformant files; the one ImageReadError line says it instead.
    Nested and concurrent reads share one saved level of the ``pydicom`` logger.
    """
    global _quiet_depth, _pydicom_level
    if LOG.isEnabledFor(logging.DEBUG):
        yield
        return
    with _quiet_lock:
        if _quiet_depth == 0:
            _pydicom_level = _PYDICOM_LOG.level
            _PYDICOM_LOG.setLevel(logging.CRITICAL + 1)
        _quiet_depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                _PYDICOM_LOG.setLevel(_pydicom_level)


def _to_unit(path: Path, arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Decoded stored values → grey float32 in [0, 1], inverted once where the file says so."""
    bits = int(ds.BitsStored)
    photometric = _photometric(ds)
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
