"""Fixtures of the DICOMweb tests: our own Orthanc (Debian's ``orthanc`` and
``orthanc-dicomweb``, installed by .ci/run) and the synthetic films uploaded to it.

Without Orthanc the tests skip with a message locally and fail under CI (``$CI`` set).
This folder is a package (``__init__.py``) so that this conftest does not shadow the
suite's own ``conftest`` module, which tests import helpers from.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from io import BytesIO

import pytest

from .orthanc_server import OrthancServer, find_orthanc, start_orthanc
from .synthetic_dicoms import FILMS, TRANSCODED_BY_ORTHANC, Film, film_dataset

PASSWORD_ENV = "CXRHASH_TEST_ORTHANC_PASSWORD"


@pytest.fixture(scope="session")
def orthanc() -> Iterator[OrthancServer]:
    """Our Orthanc for the session (stopped at its end, or at exit whatever happens)."""
    found = find_orthanc()
    if found is None:
        why = (
            "the DICOMweb tests need Debian's orthanc and orthanc-dicomweb "
            "(apt-get install orthanc orthanc-dicomweb; .ci/run installs them)"
        )
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    server = start_orthanc(*found)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def films(orthanc: OrthancServer) -> dict[str, Film]:
    """Every synthetic film, uploaded (in memory) through Orthanc's REST ``/instances``;
    those of :data:`TRANSCODED_BY_ORTHANC` are replaced by Orthanc's transcoded copy."""
    for film in FILMS:
        buffer = BytesIO()
        film_dataset(film).save_as(buffer, enforce_file_format=True)
        answer = orthanc.upload(buffer.getvalue())
        assert answer.get("Status") == "Success", (film.name, answer)
        if film.syntax in TRANSCODED_BY_ORTHANC:
            _transcode(orthanc, answer["ID"], film.syntax)
    return {film.name: film for film in FILMS}


def _transcode(orthanc: OrthancServer, instance: str, syntax: str) -> None:
    """Replace a stored instance by its copy in ``syntax`` (same UIDs), DCMTK encoding it."""
    keep = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
    with orthanc.session() as session:
        answer = session.post(
            f"{orthanc.url}/instances/{instance}/modify",
            json={"Transcode": syntax, "Keep": keep, "Force": True},
            timeout=60,
        )
        answer.raise_for_status()
        session.delete(f"{orthanc.url}/instances/{instance}", timeout=60).raise_for_status()
    orthanc.upload(answer.content)


@pytest.fixture(scope="session")
def spec(orthanc: OrthancServer, films: dict[str, Film]) -> Iterator[str]:
    """A ``dicomweb:`` spec of the loaded server, its password in an environment variable."""
    os.environ[PASSWORD_ENV] = orthanc.password
    yield f"dicomweb:{orthanc.dicomweb_url}?user={orthanc.user}&password_env={PASSWORD_ENV}"
    os.environ.pop(PASSWORD_ENV, None)
