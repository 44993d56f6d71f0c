"""A small synthetic PACS of CR/DX chest films (and the films its filters must exclude),
written with pydicom: no real data.

Each film has a patient name, id and birth date that tests grep for, pixel content of its own
(a seeded pattern), and deterministic UIDs. The set covers what a DICOMweb source has to
decode: MONOCHROME1 and MONOCHROME2 (a MONOCHROME1 film is the inverted twin of a
MONOCHROME2 one: same stored pixels), 8-bit and 12-in-16-bit, a VOI LUT window, RLE,
JPEG-LS and JPEG 2000 lossless (pydicom's encoders), JPEG lossless (no encoder on PyPI: the
film is written uncompressed and Orthanc transcodes it at upload, see
:data:`TRANSCODED_BY_ORTHANC`), one film whose pixel data is truncated, one with no Body Part
Examined (kept: the body-part filter applies where present), a hand film, a CT and an old
study.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

CR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")
CT_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
SIZE = 48
#: What every synthetic patient's birth date is: a string a grep can find.
BIRTH_DATE = "19310517"
#: Studies on or after this date are "recent"; one film's study is older.
RECENT = "20240101"


@dataclass(frozen=True)
class Film:
    """One synthetic instance and what a DICOMweb source should make of it.

    Attributes:
        name: A short name for tests (``cr_mono2``).
        modality, body_part, study_date: The header values the filters look at
            (``body_part`` ``None``: the element is absent).
        photometric, bits: Photometric Interpretation and Bits Stored.
        syntax: The transfer syntax it is written in.
        expect: ``"ok"`` (listed and decodes), ``"corrupt"`` (listed, does not decode),
            ``"excluded"`` (a filter drops it) or ``"old"`` (dropped by ``since``).
        twin: For a MONOCHROME1 film, the MONOCHROME2 film with the same stored pixels.
        extra: Further header elements (a window).
    """

    name: str
    modality: str = "DX"
    body_part: str | None = "CHEST"
    study_date: str = "20240315"
    photometric: str = "MONOCHROME2"
    bits: int = 12
    syntax: UID = ExplicitVRLittleEndian
    expect: str = "ok"
    twin: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def index(self) -> int:
        return [film.name for film in FILMS].index(self.name)

    def uid(self, level: str) -> str:
        """The film's deterministic study, series or instance UID."""
        return str(generate_uid(entropy_srcs=["cxrhash-synthetic", self.name, level]))

    @property
    def sop_uid(self) -> str:
        return self.uid("instance")

    @property
    def patient_name(self) -> str:
        return f"Zyxwvut^Patient{self.index:02d}"

    @property
    def patient_id(self) -> str:
        return f"PIDSECRET{self.index:02d}"


FILMS: tuple[Film, ...] = (
    Film("cr_mono2", modality="CR", bits=12),
    Film("cr_mono1", modality="CR", bits=12, photometric="MONOCHROME1", twin="cr_mono2"),
    Film("dx_mono2_8bit", bits=8),
    Film(
        "dx_mono1_8bit",
        bits=8,
        photometric="MONOCHROME1",
        twin="dx_mono2_8bit",
        extra={"PresentationLUTShape": "INVERSE"},
    ),
    Film("dx_window", extra={"WindowCenter": 1500, "WindowWidth": 1000}),
    Film("dx_rle", syntax=RLELossless),
    Film("dx_jpegls", syntax=JPEGLSLossless),
    Film("dx_j2k", syntax=JPEG2000Lossless),
    Film("cr_jpeg_lossless", modality="CR", syntax=JPEGLosslessSV1),
    Film("dx_no_body_part", body_part=None),
    Film("dx_corrupt", expect="corrupt"),
    Film("dx_hand", body_part="HAND", expect="excluded"),
    Film("ct_chest", modality="CT", expect="excluded"),
    Film("dx_old", study_date="20190102", expect="old"),
)
BY_NAME = {film.name: film for film in FILMS}
#: Syntaxes pydicom cannot encode: written uncompressed, for Orthanc to transcode.
TRANSCODED_BY_ORTHANC = (JPEGLosslessSV1,)


def stored_pixels(film: Film) -> np.ndarray:
    """The film's stored values: a seeded pattern of its own (its twin's, for a twin)."""
    source = BY_NAME[film.twin] if film.twin else film
    rng = np.random.default_rng(1000 + source.index)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    phase = rng.uniform(0, 2 * np.pi, 2)
    pattern = 0.5 + 0.25 * np.sin(6 * x + phase[0]) * np.cos(4 * y + phase[1])
    pattern += 0.2 * rng.random((SIZE, SIZE))
    top = 2**film.bits - 1
    return np.clip(np.rint(pattern * top), 0, top).astype(np.uint8 if film.bits == 8 else np.uint16)


def film_dataset(film: Film) -> Dataset:
    """The film as a pydicom dataset, pixel data encoded in its transfer syntax."""
    sop_class = {"CR": CR_STORAGE, "DX": DX_STORAGE}.get(film.modality, CT_STORAGE)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = film.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, film.sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = film.uid("study"), film.uid("series")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = (
        film.patient_name,
        film.patient_id,
        BIRTH_DATE,
    )
    ds.Modality, ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = (
        film.modality,
        film.study_date,
        1,
        1,
    )
    if film.body_part is not None:
        ds.BodyPartExamined = film.body_part
    _set_pixels(ds, film)
    for key, value in film.extra.items():
        setattr(ds, key, value)
    return ds


def _set_pixels(ds: Dataset, film: Film) -> None:
    pixels = stored_pixels(film)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, film.photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = pixels.itemsize * 8, film.bits, film.bits - 1
    ds.PixelRepresentation = 0
    if film.syntax in (ExplicitVRLittleEndian, *TRANSCODED_BY_ORTHANC):
        data = pixels.tobytes()
        # Truncated: the element is well formed (Orthanc stores it) but holds half the pixels.
        ds.PixelData = data[: len(data) // 2] if film.expect == "corrupt" else data
    else:
        ds.compress(film.syntax, pixels, generate_instance_uid=False)


def write_films(folder: Path, keep: Callable[[Film], bool] = lambda film: True) -> list[Path]:
    """Write every film (that ``keep`` keeps) to ``folder`` as ``NAME.dcm``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for film in FILMS:
        if keep(film):
            path = folder / f"{film.name}.dcm"
            film_dataset(film).save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths
