"""The one pixel limit shared by PNG/JPEG/TIFF and DICOM (issue #11): its settings, and
PNG decompression bombs refused before decoding."""

from __future__ import annotations

import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dicom
from hostile_files import write_blank_png
from PIL import Image

from cxrhash.data.images import ImageReadError, load_image
from cxrhash.data.limits import (
    DEFAULT_MAX_PIXELS,
    ENV_VAR,
    max_pixels,
    pixel_limit_reason,
    set_max_pixels,
)

pytestmark = pytest.mark.usefixtures("default_pixel_limit")


def test_the_default_admits_large_radiographs_and_multi_frame_files_count_every_frame() -> None:
    assert max_pixels() == DEFAULT_MAX_PIXELS == 100_000_000
    assert pixel_limit_reason(4300, 4300) is None  # the largest flat-panel detectors
    assert pixel_limit_reason(4300, 4300, frames=5) is None
    assert pixel_limit_reason(4300, 4300, frames=6) == (
        "too many pixels: 4300 rows × 4300 columns × 6 frames × 1 sample = 110,940,000 values, "
        "over the limit of 100,000,000 (CXRHASH_MAX_PIXELS changes it)"
    )


def test_env_var_and_set_max_pixels_set_one_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "250_000_000")
    assert max_pixels() == 250_000_000
    set_max_pixels(1000)
    assert max_pixels() == 1000  # the call wins over the environment
    set_max_pixels(None)
    assert max_pixels() == 250_000_000
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ValueError, match="CXRHASH_MAX_PIXELS is 'lots'; expected a positive"):
        max_pixels()
    with pytest.raises(ValueError, match="expected a positive whole number"):
        set_max_pixels(0)


def test_a_png_zip_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    """20000 × 20000 pixels in a 50 kB file named like any radiograph: decoding it
    would take 400 MB as 1-bit and 1.6 GB as float32."""
    path = write_blank_png(tmp_path / "chest_0001.png", 20000, 20000)
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageReadError) as info:
            load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0
    assert peak < 20 * 2**20
    assert info.value.reason == (
        "too many pixels: 400,000,000 values, over the limit of 100,000,000 "
        "(CXRHASH_MAX_PIXELS changes it)"
    )


def test_png_and_dicom_over_one_limit_are_refused_with_their_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "10000")
    pixels = np.zeros((100, 101), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    write_dicom(tmp_path / "a.dcm", pixels.astype(np.uint16))
    expected = (
        "too many pixels: 100 rows × 101 columns × 1 frame × 1 sample = 10,100 values, "
        "over the limit of 10,000 (CXRHASH_MAX_PIXELS changes it)"
    )
    for name in ("a.png", "a.dcm"):
        with pytest.raises(ImageReadError) as info:
            load_image(tmp_path / name)
        assert info.value.reason == expected
    Image.fromarray(np.zeros((60, 60, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="60 rows × 60 columns × 1 frame × 3 samples"):
        load_image(tmp_path / "rgb.png")


def test_pillow_follows_the_shared_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's own bomb check must neither refuse nor warn about an image the shared
    limit admits, whatever Pillow's limit was before."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.setenv(ENV_VAR, "10000")
    Image.fromarray(np.full((100, 100), 255, dtype=np.uint8)).save(tmp_path / "ok.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = load_image(tmp_path / "ok.png")
    assert out.shape == (100, 100) and float(out.min()) == 1.0


def test_multi_frame_dicom_counts_every_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = np.arange(5 * 40 * 40, dtype=np.uint16).reshape(5, 40, 40)
    path = write_dicom(tmp_path / "frames.dcm", frames % 4096)
    monkeypatch.setenv(ENV_VAR, str(5 * 40 * 40 - 1))
    with pytest.raises(ImageReadError, match="40 rows × 40 columns × 5 frames × 1 sample"):
        load_image(path)
    monkeypatch.setenv(ENV_VAR, str(5 * 40 * 40))
    assert load_image(path).shape == (40, 40)
