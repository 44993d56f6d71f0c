"""An uploaded film, read once: the network's input, a preview for the viewer (window/level
on the real values for DICOM) and, for DICOM, the Patient ID to pseudonymise.

The file is any format :func:`cxrhash.data.images.load_image` reads, sniffed by content;
a DICOM header is de-identified as soon as it is read (:mod:`cxrhash.data.deidentify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxrhash.data.dicom import InstanceUids, read_dicom_film
from cxrhash.data.errors import ImageReadError
from cxrhash.data.files import check_regular_file, is_dicom
from cxrhash.data.images import load_image, resize_square, undecodable

#: The preview's longest side: enough for a laptop screen, small enough to send.
PREVIEW_SIDE = 512
_FULL = 65535.0


@dataclass
class Preview:
    """The film for display: ``pixels`` (uint16, at most :data:`PREVIEW_SIDE` a side) map
    linearly to the file's values; ``window`` (centre, width) in the same 0–65535 scale
    is the file's default (a DICOM's window, else the full range); ``inverted`` says the
    film displays with high values dark (MONOCHROME1)."""

    pixels: np.ndarray
    window_center: float
    window_width: float
    inverted: bool
    dicom: bool


@dataclass
class Upload:
    """What one uploaded file gives: the network's ``size``² input, its preview and, for
    a DICOM, the Patient ID (for a keyed pseudonym only; never log it) and its instance
    UIDs (to link back to a PACS)."""

    image: np.ndarray
    preview: Preview
    patient_id: str | None
    uids: InstanceUids | None = None


def load_upload(path: str | Path, size: int) -> Upload:
    """Read an uploaded film once into its network input and its preview.

    Raises:
        ImageReadError: for any failure of this file (its reason says which), as
            :func:`cxrhash.data.images.load_resized`.
    """
    path = Path(path)
    try:
        check_regular_file(path)
        if is_dicom(path):
            film = read_dicom_film(path)
            values = film.modality if film.modality is not None else film.grey
            preview = _preview(values, film.window, film.inverted, dicom=True)
            return Upload(resize_square(film.grey, size), preview, film.patient_id, film.uids)
        grey = load_image(path)
        return Upload(resize_square(grey, size), _preview(grey, (0.5, 1.0), False, False), None)
    except ImageReadError:
        raise
    except Exception as err:  # about this one file: its content made the decoder fail
        raise ImageReadError(path, undecodable(err)) from err


def _preview(
    values: np.ndarray, window: tuple[float, float] | None, inverted: bool, dicom: bool
) -> Preview:
    """``values`` scaled to uint16 over their range and shrunk to the preview size; the
    window moved into the same scale (full range when the file gives none)."""
    low, high = float(values.min()), float(values.max())
    span = high - low if high > low else 1.0
    if window is None:
        centre, width = (low + high) / 2, span
    else:
        centre, width = window
    scaled = (values.astype(np.float64) - low) * (_FULL / span)
    pixels = _shrink(scaled.astype(np.float32))
    return Preview(
        pixels=np.clip(np.rint(pixels), 0, _FULL).astype(np.uint16),
        window_center=(centre - low) * _FULL / span,
        window_width=max(width * _FULL / span, 1.0),
        inverted=inverted,
        dicom=dicom,
    )


def _shrink(values: np.ndarray) -> np.ndarray:
    """``values`` with the longest side at most :data:`PREVIEW_SIDE` (aspect kept)."""
    height, width = values.shape
    scale = PREVIEW_SIDE / max(height, width)
    if scale >= 1:
        return values
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(values).resize(shape, Image.Resampling.BOX))
