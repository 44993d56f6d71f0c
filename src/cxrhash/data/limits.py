"""The one limit on how many pixel values an image file may declare (DICOM and PNG/JPEG/TIFF).

A small file can declare a huge image: a 475 kB deflated DICOM declaring
14000 × 14000 pixels took 5.7 GB and 28 s to decode. Readers compare the size a
file's header declares with this limit before decoding anything.

The count is rows × columns × frames × samples per pixel: the number of values a
reader would decode. Stored bit depth does not change it, since every value
becomes a float while it is decoded. The default, 100 million, admits a
4300 × 4300 radiograph (18.5 million) five times over, or a multi-frame file of
five such frames. Change it with ``CXRHASH_MAX_PIXELS`` (every process,
DataLoader workers included) or :func:`set_max_pixels` (this process).
"""

from __future__ import annotations

import os

from PIL import Image

ENV_VAR = "CXRHASH_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000

_override: int | None = None


def _positive(value: object, source: str) -> int:
    try:
        limit = int(str(value).strip())
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ValueError(f"{source} is {value!r}; expected a positive whole number of pixels")
    return limit


def max_pixels() -> int:
    """The limit: :func:`set_max_pixels`'s value, else ``$CXRHASH_MAX_PIXELS``, else the default.

    Raises:
        ValueError: ``CXRHASH_MAX_PIXELS`` is not a positive whole number.
    """
    if _override is not None:
        return _override
    text = os.environ.get(ENV_VAR, "").strip()
    return _positive(text, ENV_VAR) if text else DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int | None) -> None:
    """Set the limit for this process; ``None`` goes back to the environment or default."""
    global _override
    _override = None if limit is None else _positive(limit, "the pixel limit")


def follow_pixel_limit() -> None:
    """Point Pillow's own decompression-bomb check at the shared pixel limit.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and refuses above twice that, inside
    ``Image.open``. With the two equal, Pillow never refuses an image the shared
    limit admits, and whatever it refuses the shared limit refuses too.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels()


def pixel_limit_reason(rows: int, columns: int, frames: int = 1, samples: int = 1) -> str | None:
    """Why an image of this declared size is refused, or ``None`` if it is within the limit."""
    limit = max_pixels()
    count = rows * columns * frames * samples
    if count <= limit:
        return None
    return (
        f"too many pixels: {rows} rows × {columns} columns × {frames} "
        f"frame{'s' if frames != 1 else ''} × {samples} sample{'s' if samples != 1 else ''} "
        f"= {count:,} values, over the limit of {limit:,} ({ENV_VAR} changes it)"
    )


def over_limit_reason(count: int) -> str:
    """The refusal for an image known only by its pixel count (0: not known)."""
    size = f"{count:,} values, " if count else ""
    return f"too many pixels: {size}over the limit of {max_pixels():,} ({ENV_VAR} changes it)"
