"""Image decoding (PNG/TIFF bit depths, colour, corrupt files) and square resizing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrhash.data.images import ImageReadError, load_image, resize_square


def test_eight_bit_png_is_scaled_by_255(tmp_path: Path) -> None:
    pixels = np.array([[0, 51], [204, 255]], dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.testing.assert_allclose(load_image(tmp_path / "a.png"), pixels / 255.0, atol=1e-7)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_is_scaled_by_65535(tmp_path: Path, suffix: str) -> None:
    pixels = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    path = tmp_path / f"b{suffix}"
    Image.fromarray(pixels).save(path)
    out = load_image(path)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, pixels / 65535.0, atol=1e-7)


def test_rgb_and_rgba_become_grey(tmp_path: Path) -> None:
    rgb = np.zeros((1, 2, 3), dtype=np.uint8)
    rgb[0, 1] = 255
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "d.png")
    for name in ("c.png", "d.png"):
        np.testing.assert_allclose(load_image(tmp_path / name), [[0.0, 1.0]], atol=1e-7)


def _png(tmp_path: Path) -> Path:
    path = tmp_path / "ok.png"
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(path)  # noise does not compress: ~4 kB, cut at 200 bytes
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(_png(p.parent).read_bytes()[:200]), "truncated or corrupt"),
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_text("this is a text file"), "not a recognised image"),
        (lambda p: None, "file not found"),
    ],
    ids=["truncated", "empty", "text", "missing"],
)
def test_bad_files_raise_naming_the_file(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageReadError, match=f"bad.png: {reason}") as info:
        load_image(path)
    assert info.value.path == path


def test_resize_square_keeps_aspect_and_centre_crops() -> None:
    # Left half 0, right half 1 on a 4×8 image: the centre square 4×4 spans
    # columns 2..5, so the resized square is half dark, half bright.
    img = np.zeros((4, 8), dtype=np.float32)
    img[:, 4:] = 1.0
    out = resize_square(img, 8)
    assert out.shape == (8, 8) and out.dtype == np.float32
    assert np.all(out[:, :3] < 0.1) and np.all(out[:, 5:] > 0.9)
    np.testing.assert_allclose(out, out[:, ::-1] * -1 + 1, atol=1e-6)  # symmetric about the centre


def test_resize_square_upsamples_constant_exactly() -> None:
    out = resize_square(np.full((64, 64), 0.25, dtype=np.float32), 224)
    assert out.shape == (224, 224)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_an_over_size_png_is_a_read_error_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow's DecompressionBombError (not an OSError) must become the per-file error
    that jobs skip and count (issue #11, finding 3). Pillow follows the shared pixel
    limit, and refuses inside ``Image.open`` what is over twice that limit."""
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    monkeypatch.setenv("CXRHASH_MAX_PIXELS", str(64 * 64 // 4))  # > 2× the limit: Pillow's error
    with pytest.raises(
        ImageReadError, match="big.png: too many pixels: 4,096 values, over the limit of 1,024"
    ) as info:
        load_image(path)
    assert info.value.path == path


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode"
)
def test_an_unreadable_file_is_a_read_error(tmp_path: Path) -> None:
    path = _png(tmp_path)
    path.chmod(0)
    try:
        with pytest.raises(ImageReadError, match="cannot open"):
            load_image(path)
    finally:
        path.chmod(0o644)


def test_an_open_failure_while_sniffing_is_a_read_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DICOM sniffing opens the file before the decoder does; a PermissionError
    there used to escape (issue #11, finding 3). Simulated, since root reads anything."""
    path = tmp_path / "locked"
    path.write_bytes(b"\0" * 200)

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ImageReadError, match="locked: cannot open \\(Permission denied\\)"):
        load_image(path)
