"""Hostile or mistaken inputs to the readers (issue #11): each gives one clear line naming
the file (and line), or a warning, never a traceback, a hang or a crash while printing."""

from __future__ import annotations

import io
import logging
import os
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dicom
from PIL import Image

from cxrhash.data.dataset import DataFormatError
from cxrhash.data.dicom import read_dicom
from cxrhash.data.images import ImageReadError, load_image
from cxrhash.data.readers import open_dataset, read_folder, read_nih
from cxrhash.pretrain.unlabeled import UnlabeledImages

NIH_HEADER = "Image Index,Finding Labels,Patient ID\n"


def _png(path: Path, height: int = 64, width: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width), 128, dtype=np.uint8)).save(path)
    return path


def test_chestmnist_spec_on_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "chestmnist.npz"
    path.write_text("Image Index,Finding Labels\n")
    with pytest.raises(DataFormatError) as info:
        open_dataset(f"chestmnist:{path}")
    assert str(info.value).startswith(
        f"{path}: not a MedMNIST .npz file; expected a zip archive of .npy arrays"
    )


def test_a_chestmnist_array_declaring_more_than_it_holds_is_refused_unallocated(
    tmp_path: Path,
) -> None:
    """numpy allocates the shape a .npy header declares before reading: 10⁶×28×28 uint8
    (0.8 GB) from a 1 kB member, or a terabyte from a header that says so."""
    path = tmp_path / "chestmnist.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 28, 28)}
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("test_images.npy", header.getvalue() + bytes(1000))
        archive.writestr("test_labels.npy", header.getvalue())
    tracemalloc.start()
    try:
        with pytest.raises(DataFormatError) as info:
            open_dataset(f"chestmnist:{path}?split=test")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "test_images.npy declares 784,000,000 bytes of uint8 in shape (1000000, 28, 28)" in (
        str(info.value)
    )
    assert peak < 50 * 2**20


def test_a_latin1_labels_csv_names_the_file_the_line_and_utf8(tmp_path: Path) -> None:
    """The bad byte sits past the first 8 kB the text decoder reads at once."""
    _png(tmp_path / "images" / "a.png")
    rows = "".join(f"a.png,No Finding,p{i}\n" for i in range(2, 600))
    text = NIH_HEADER + rows + "a.png,No Finding,Müller\n"
    (tmp_path / "labels.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(DataFormatError) as info:
        read_nih(tmp_path / "labels.csv")
    assert str(info.value) == (
        f"{tmp_path / 'labels.csv'} line 600: byte 0xFC is not UTF-8; expected a UTF-8 CSV "
        "(re-save the file as UTF-8)"
    )


def test_a_latin1_official_split_list_names_the_file(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.png")
    (tmp_path / "labels.csv").write_text(NIH_HEADER + "a.png,No Finding,p1\n")
    (tmp_path / "test_list.txt").write_bytes("a.png\nMüller.png\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match="test_list.txt line 2: byte 0xFC is not UTF-8"):
        read_nih(tmp_path / "labels.csv", official_split=tmp_path / "test_list.txt")


@pytest.mark.parametrize("read", [load_image, read_dicom], ids=["load_image", "read_dicom"])
def test_a_directory_is_not_called_missing(tmp_path: Path, read) -> None:
    folder = tmp_path / "scan.dcm"
    folder.mkdir()
    with pytest.raises(ImageReadError) as info:
        read(folder)
    assert info.value.reason == "is a directory, not an image file"


@pytest.mark.parametrize(
    ("shape", "warned"), [((1, 1), True), ((31, 200), True), ((32, 32), False)]
)
@pytest.mark.parametrize("kind", ["png", "dcm"])
def test_a_tiny_image_is_read_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, shape: tuple[int, int], warned: bool, kind
) -> None:
    path = tmp_path / f"tiny.{kind}"
    if kind == "png":
        _png(path, *shape)
    else:
        write_dicom(path, np.arange(shape[0] * shape[1]).reshape(shape) % 4096)
    caplog.set_level(logging.INFO)
    assert load_image(path).shape == shape
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if not warned:
        assert records == []
        return
    assert [r.name for r in records] == ["cxrhash.data.images"]
    message = records[0].getMessage()
    assert message.startswith(
        f"{path}: image is only {shape[0]} × {shape[1]} pixels (height × width), under 32"
    )
    caplog.clear()
    assert load_image(path).shape == shape  # read again (the next epoch): no new warning
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_header_of_a_million_commas_is_refused_quickly_and_briefly(tmp_path: Path) -> None:
    """The error used to list all million column names (megabytes of message)."""
    path = tmp_path / "labels.csv"
    path.write_text(NIH_HEADER.strip() + "," * 1_000_000 + "\na.png,,p1\n")
    start = time.perf_counter()
    with pytest.raises(DataFormatError) as info:
        read_nih(path)
    assert time.perf_counter() - start < 5.0
    assert str(info.value) == (
        f"{path}: the header has 1,000,003 columns; a label CSV has at most 10,000 "
        "(is this the right file?)"
    )


def test_a_missing_column_error_lists_only_the_first_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(",".join(f"c{i}" for i in range(500)) + "\n")
    with pytest.raises(DataFormatError, match=r"'c19'\] … \(500 in all\)$") as info:
        read_nih(path)
    assert len(str(info.value)) < 600


def test_a_line_of_several_megabytes_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(NIH_HEADER + "a.png,No Finding," + "x" * 5_000_000 + "\n")
    with pytest.raises(DataFormatError) as info:
        read_nih(path)
    assert str(info.value) == (
        f"{path} line 2: longer than 1,048,576 characters; expected a line of a label file"
    )


def test_an_over_long_quoted_cell_names_the_file_and_line(tmp_path: Path) -> None:
    """A quoted cell may span lines; the csv module's cell limit (128 kB) still holds."""
    path = tmp_path / "labels.csv"
    cell = "\n".join(["y" * 99] * 3000)  # 300 kB in lines of 100 characters
    path.write_text(NIH_HEADER + f'a.png,"{cell}",p1\n')
    with pytest.raises(DataFormatError) as info:
        read_nih(path)
    assert str(info.value).startswith(f"{path} line ")
    assert "cannot parse it as CSV (field larger than field limit (131072))" in str(info.value)


def test_non_utf8_file_names_in_a_folder_dataset_are_left_out_with_a_printable_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "img"
    _png(folder / "ok.png")
    _png(Path(os.fsdecode(os.fsencode(folder) + b"/\xff\xfe.png")))
    (tmp_path / "labels.csv").write_text("path,labels,patient_id\nok.png,,p1\n")
    caplog.set_level(logging.WARNING)
    ds = read_folder(folder, tmp_path / "labels.csv")
    assert ds.paths == [str(folder / "ok.png")]
    (message,) = [r.getMessage() for r in caplog.records]
    assert "1 file name(s) are not valid UTF-8" in message
    assert message.endswith("e.g. \\xff\\xfe.png")
    message.encode("utf-8")  # no lone surrogates: printable on any UTF-8 stream


def test_a_read_error_prints_a_non_utf8_name_escaped(tmp_path: Path) -> None:
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xff\xfd.png"))
    path.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError) as info:
        load_image(path)
    assert os.fsencode(info.value.path) == os.fsencode(path)  # the real name, for re-opening
    text = str(info.value)
    text.encode("utf-8")
    assert text == f"cannot read image {tmp_path}/\\xff\\xfd.png: not a recognised image format"


def test_an_unlabelled_folder_with_a_non_utf8_name_is_listed_and_read(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png")
    _png(Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xff\xfe.png")))
    images = UnlabeledImages(tmp_path, 32)
    assert len(images) == 2
    assert len(images.fingerprint()) == 16
    assert all("query" in images[i] for i in range(2))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: it is never opened."""
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError) as info:
        load_image(fifo)
    assert info.value.reason == "is not a regular file (a device, FIFO or socket?)"
