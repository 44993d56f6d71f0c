"""Fetching and decoding every synthetic film from a live Orthanc over WADO-RS: the same
pixels as the one decode path gives the file, MONOCHROME1 inverted, the corrupt film
reported by UID, and nothing about a patient in what the source returns or logs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cxrhash.data import read_dicom
from cxrhash.data.dicomweb import DicomWebSource, FetchedFilm, InstanceError
from cxrhash.data.dicomweb.fetch import MEDIA_TYPES

from .orthanc_server import OrthancServer
from .synthetic_dicoms import BIRTH_DATE, FILMS, Film, write_films


@pytest.fixture(scope="module")
def results(spec: str) -> dict[str, FetchedFilm | InstanceError]:
    return {item.sop_uid: item for item in DicomWebSource(spec).films()}


def test_each_film_decodes_as_the_file_does(
    results: dict[str, FetchedFilm | InstanceError], films: dict[str, Film], tmp_path: Path
) -> None:
    paths = {p.stem: p for p in write_films(tmp_path, lambda film: film.expect in ("ok", "old"))}
    for name, path in paths.items():
        fetched = results[films[name].sop_uid]
        assert isinstance(fetched, FetchedFilm), (name, fetched)
        assert fetched.pixels.dtype == np.float32 and fetched.pixels.shape == (48, 48)
        np.testing.assert_array_equal(fetched.pixels, read_dicom(path), err_msg=name)
        assert (fetched.study_uid, fetched.series_uid) == (
            films[name].uid("study"),
            films[name].uid("series"),
        )


def test_monochrome1_is_its_twin_inverted(
    results: dict[str, FetchedFilm | InstanceError], films: dict[str, Film]
) -> None:
    for film in FILMS:
        if film.twin:
            one, two = results[film.sop_uid], results[films[film.twin].sop_uid]
            assert isinstance(one, FetchedFilm) and isinstance(two, FetchedFilm)
            np.testing.assert_allclose(one.pixels, 1.0 - two.pixels, atol=1e-6)
            assert np.abs(one.pixels - two.pixels).mean() > 0.2  # not the same film


def test_pixel_content_is_distinct(results: dict[str, FetchedFilm | InstanceError]) -> None:
    decoded = [r.pixels.tobytes() for r in results.values() if isinstance(r, FetchedFilm)]
    assert len(set(decoded)) == len(decoded) == sum(f.expect in ("ok", "old") for f in FILMS)


def test_corrupt_film_reported_by_uid(
    results: dict[str, FetchedFilm | InstanceError], films: dict[str, Film]
) -> None:
    errors = [r for r in results.values() if isinstance(r, InstanceError)]
    assert [e.sop_uid for e in errors] == [films["dx_corrupt"].sop_uid]
    assert "pixel data" in errors[0].reason


def test_nothing_identifies_a_patient(
    spec: str, caplog: pytest.LogCaptureFixture, films: dict[str, Film]
) -> None:
    with caplog.at_level(logging.DEBUG):
        source = DicomWebSource(spec)
        refs = list(source.instances())
        items = list(source.films(refs))
    text = "\n".join(
        [repr(ref) for ref in refs]
        + [repr(vars(item)) if isinstance(item, FetchedFilm) else str(item) for item in items]
        + [record.getMessage() for record in caplog.records]
    )
    assert films["dx_corrupt"].sop_uid in text  # the grep sees what is there
    assert "cannot decode" in caplog.text
    for film in films.values():
        for secret in (film.patient_id, film.patient_name, film.patient_name.split("^")[1]):
            assert secret not in text
    assert BIRTH_DATE not in text


def test_served_in_the_stored_syntax(
    orthanc: OrthancServer, spec: str, films: dict[str, Film]
) -> None:
    """The compressed films reach the decode path compressed (pydicom's handlers decode them)."""
    source = DicomWebSource(spec)
    for film in films.values():
        ds = source.client.retrieve_instance(
            film.uid("study"), film.uid("series"), film.sop_uid, media_types=MEDIA_TYPES
        )
        assert ds.file_meta.TransferSyntaxUID == film.syntax, film.name
