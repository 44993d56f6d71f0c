"""Reading radiograph files into float32 arrays in [0, 1], and resizing them."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrhash.data.dicom import read_dicom
from cxrhash.data.errors import ImageReadError, printable_path  # both also re-exported
from cxrhash.data.files import check_regular_file, is_dicom
from cxrhash.data.limits import follow_pixel_limit, over_limit_reason, pixel_limit_reason

LOG = logging.getLogger(__name__)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
#: How a file becomes the network's input; part of every model id, so an index refuses
#: codes made under other preprocessing. Change ``version`` with any change below.
PREPROCESSING: dict[str, object] = {
    "version": 1,
    "grey": "[0, 1] by bit depth; DICOM modality, VOI and presentation LUTs",
    "resize": "shorter side to image_size, bilinear, centre square crop",
    "channels": 1,
}
# Smaller images are read, with a warning: a radiograph has hundreds of pixels a
# side, so these are thumbnails, icons or placeholders the network would see as a blur.
MIN_SIDE = 32
_PILLOW_COUNT = re.compile(r"\((\d+) pixels\)")
_PILLOW_ERRORS = (Image.DecompressionBombError, OSError, SyntaxError, ValueError)
_SMALL_WARNED: set[str] = set()  # files already warned about as too small


def load_image(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG/TIFF/DICOM radiograph as float32 ``H×W`` in [0, 1].

    Grey values are scaled by the maximum of the file's bit depth (255 for
    8-bit, 65535 for 16-bit); colour images are converted to luminance.
    DICOM goes through :func:`cxrhash.data.dicom.read_dicom`.

    The size a file declares is checked against the shared pixel limit
    (:mod:`cxrhash.data.limits`) before anything is decoded. An image under
    :data:`MIN_SIDE` pixels on a side is returned with a warning (once per file and
    process, not every epoch).

    Raises:
        ImageReadError: The file is missing, a directory, empty, unreadable
            (permissions), truncated, over the pixel limit, or not an image.
    """
    path = Path(path)
    check_regular_file(path)
    try:
        dicom = is_dicom(path)
    except OSError as err:  # e.g. no permission to read it
        raise ImageReadError(path, f"cannot open ({err.strerror or err})") from err
    arr = read_dicom(path) if dicom else _read_pillow(path)
    if min(arr.shape) < MIN_SIDE and _first_time(_SMALL_WARNED, str(path)):
        LOG.warning(
            "%s: image is only %d × %d pixels (height × width), under %d on a side; "
            "is it a thumbnail or placeholder rather than a radiograph?",
            printable_path(path),
            *arr.shape,
            MIN_SIDE,
        )
    return arr


def _first_time(seen: set[str], key: str, cap: int = 100_000) -> bool:
    """True the first time ``key`` is seen in this process (so a warning is not repeated
    every epoch); ``seen`` holds at most ``cap`` keys."""
    if key in seen:
        return False
    if len(seen) < cap:
        seen.add(key)
    return True


def _read_pillow(path: Path) -> np.ndarray:
    follow_pixel_limit()
    try:
        with warnings.catch_warnings():
            # The check below refuses whatever Pillow would only warn about.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except _PILLOW_ERRORS as err:
        raise _pillow_error(path, err) from err
    with img:
        width, height = img.size
        reason = pixel_limit_reason(height, width, 1, len(img.getbands()))
        if reason is not None:
            raise ImageReadError(path, reason)
        try:
            img.load()
            arr = _to_unit_grey(img)
        except _PILLOW_ERRORS as err:
            raise _pillow_error(path, err) from err
    if arr.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D grey image, got shape {arr.shape}")
    return arr


def _pillow_error(path: Path, err: Exception) -> ImageReadError:
    """The per-file read error for one of :data:`_PILLOW_ERRORS`."""
    if isinstance(err, Image.DecompressionBombError):
        match = _PILLOW_COUNT.search(str(err))
        return ImageReadError(path, over_limit_reason(int(match.group(1)) if match else 0))
    if isinstance(err, UnidentifiedImageError):
        return ImageReadError(path, "not a recognised image format")
    return ImageReadError(path, f"truncated or corrupt image ({err})")


def undecodable(err: Exception) -> str:
    """The skip reason for a file whose decoding or resizing raised ``err`` (an error other
    than :class:`ImageReadError`: decoders raise many types on odd files)."""
    if isinstance(err, MemoryError):
        return "too large to decode in memory (MemoryError)"
    return f"cannot decode ({type(err).__name__}: {err})"


def load_resized(path: str | Path, size: int) -> np.ndarray:
    """:func:`load_image` then :func:`resize_square` to ``size``, for one query film.

    Raises:
        ImageReadError: for any failure of this file, including a decoder's or resampler's
            ``ValueError``/``RuntimeError`` and a ``MemoryError`` on a huge image (its reason
            says which). ``KeyboardInterrupt`` and ``SystemExit`` pass through.
    """
    try:
        return resize_square(load_image(path), size)
    except ImageReadError:
        raise
    except Exception as err:  # about this one file: its content made the decoder fail
        raise ImageReadError(path, undecodable(err)) from err


def _to_unit_grey(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        return (np.asarray(img, dtype=np.float64) / 65535.0).astype(np.float32)
    if mode == "I":
        values = np.asarray(img, dtype=np.float64)
        # Pillow opens some 16-bit files as 32-bit "I"; keep their 16-bit scale.
        scale = 65535.0 if values.min() >= 0 and values.max() <= 65535 else 2.0**31 - 1
        return np.clip(values / scale, 0.0, 1.0).astype(np.float32)
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if values.min() >= 0.0 and values.max() <= 1.0:
            return values.astype(np.float32)
        low, high = values.min(), values.max()
        if high == low:
            return np.zeros(values.shape, dtype=np.float32)
        return ((values - low) / (high - low)).astype(np.float32)
    if mode == "LA":
        img = img.getchannel("L")
    elif mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.float32) / 255.0


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (aspect kept), then centre-crop to square.

    Bilinear; Pillow widens the filter when shrinking, which antialiases.

    Args:
        img: ``H×W`` float array.
        size: Output side length.

    Returns:
        float32 ``size×size`` array.
    """
    if img.ndim != 2:
        raise ValueError(f"expected an H×W image, got shape {img.shape}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    height, width = img.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    if side == size and height == width:
        return img.astype(np.float32, copy=False)
    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32))
    # Cropping the central square of the input and scaling it is the same
    # geometry as scaling the shorter side then cropping, in one resampling.
    out = pil.resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
    )
    return np.array(out, dtype=np.float32)
