"""Reading radiograph files into float32 arrays in [0, 1], and resizing them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

LOG = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageReadError(ValueError):
    """An image file is missing, empty, truncated, corrupt or of an unsupported kind.

    Attributes:
        path: The file.
        reason: What went wrong, in words.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def is_dicom(path: Path) -> bool:
    """True for a ``.dcm``/``.dicom`` name or the ``DICM`` magic at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as handle:
        head = handle.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    return head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC


def load_image(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG/TIFF/DICOM radiograph as float32 ``H×W`` in [0, 1].

    Grey values are scaled by the maximum of the file's bit depth (255 for
    8-bit, 65535 for 16-bit); colour images are converted to luminance.
    DICOM goes through :func:`cxrhash.data.dicom.read_dicom`.

    Raises:
        ImageReadError: The file is missing, empty, unreadable (permissions), truncated,
            larger than Pillow's decompression-bomb limit, or not an image.
    """
    # Imported here because dicom.py raises this module's ImageReadError.
    from cxrhash.data.dicom import read_dicom

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(path, "file is empty")
        dicom = is_dicom(path)
    except OSError as err:  # e.g. no permission to read it
        raise ImageReadError(path, f"cannot open ({err.strerror or err})") from err
    if dicom:
        return read_dicom(path)
    try:
        with Image.open(path) as img:
            img.load()
            arr = _to_unit_grey(img)
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, f"too many pixels ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageReadError(path, "not a recognised image format") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(path, f"truncated or corrupt image ({err})") from err
    if arr.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D grey image, got shape {arr.shape}")
    return arr


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
