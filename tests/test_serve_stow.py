"""STOW-RS (issue #14): a PACS pushes films to ``POST /dicomweb/studies``; they are indexed
de-identified, keyed by their SOP Instance UID, and their search hits link back to the PACS."""

from __future__ import annotations

import io
import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import build_phantom_index, stored_text, write_dicom
from fastapi.testclient import TestClient
from PIL import Image

from cxrhash.data.images import load_image
from cxrhash.serve import create_app
from cxrhash.serve.stow import CANNOT_UNDERSTAND, STUDY_MISMATCH

TOKEN = "s3cret-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PACS = "http://pacs.example.org:8042/dicom-web"
PHI = {"PatientName": "DOE^JANE", "PatientID": "MRN0012345", "PatientBirthDate": "19610203"}


@pytest.fixture(scope="module")
def built(tiny_run: Path, phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_phantom_index(tiny_run, phantom_dir, tmp_path_factory.mktemp("stow") / "idx")


@pytest.fixture
def index_dir(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "idx"))


@pytest.fixture
def client(index_dir: Path) -> TestClient:
    return TestClient(create_app(index_dir, api_token=TOKEN.encode(), pacs_url=PACS + "/"))


def dicom_of(film: Path, folder: Path, study: str, sop: str) -> bytes:
    """A DX DICOM of a phantom film's pixels (12 bits), with patient data and UIDs."""
    pixels = np.round(load_image(film) * 4095)
    path = write_dicom(
        folder / f"{sop}.dcm",
        pixels,
        StudyInstanceUID=study,
        SeriesInstanceUID=study + ".1",
        SOPInstanceUID=sop,
        **PHI,
    )
    return path.read_bytes()


def related(parts: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/related body of ``(content type, bytes)`` parts, and its headers."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n"
        for kind, data in parts
    )
    body += f"--{boundary}--\r\n".encode()
    kind = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return body, {"Content-Type": kind, **AUTH}


def uids(answer: dict, tag: str) -> list[str]:
    return [item["00081155"].get("Value", [""])[0] for item in answer.get(tag, {}).get("Value", [])]


def test_pushed_films_are_indexed_and_link_back_to_the_pacs(
    client: TestClient,
    index_dir: Path,
    phantom_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    films = sorted((phantom_dir / "images").glob("*.png"))[:2]
    a = dicom_of(films[0], tmp_path, "1.2.826.0.1.7.1", "1.2.826.0.1.7.1.1.1")
    b = dicom_of(films[1], tmp_path, "1.2.826.0.1.7.2", "1.2.826.0.1.7.2.1.1")
    png = io.BytesIO()
    Image.new("L", (32, 32), 128).save(png, format="PNG")
    size = client.get("/api/stats").json()["size"]
    body, headers = related(
        [("application/dicom", a), ("application/dicom", png.getvalue()), ("application/dicom", b)]
    )
    with caplog.at_level(logging.DEBUG):
        res = client.post("/dicomweb/studies", content=body, headers=headers)
    assert res.status_code == 202, res.text  # one part failed
    assert res.headers["content-type"].startswith("application/dicom+json")
    answer = res.json()
    assert uids(answer, "00081199") == ["1.2.826.0.1.7.1.1.1", "1.2.826.0.1.7.2.1.1"]
    failed = answer["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[CANNOT_UNDERSTAND]]
    assert client.get("/api/stats").json()["size"] == size + 2

    found = client.post("/api/search", files={"image": ("q", a)}, params={"k": 5}).json()
    # the phantom film it was made from is in the index too, at the same distance
    pushed = [h for h in found["hits"] if h["pacs"] is not None]
    assert [h["distance"] for h in pushed] == [0], found["hits"]
    hit = pushed[0]
    assert hit["findings"] == [] and hit["shared_findings"] == []
    wado = f"{PACS}/studies/1.2.826.0.1.7.1/series/1.2.826.0.1.7.1.1/instances/1.2.826.0.1.7.1.1.1"
    assert hit["pacs"] == {
        "study_uid": "1.2.826.0.1.7.1",
        "series_uid": "1.2.826.0.1.7.1.1",
        "sop_uid": "1.2.826.0.1.7.1.1.1",
        "wado_url": wado,
    }
    assert hit["case_id"] != "1.2.826.0.1.7.1.1.1"  # stored as its keyed pseudonym

    body, headers = related([("application/dicom", a)])
    again = client.post("/dicomweb/studies", content=body, headers=headers)
    assert again.status_code == 200 and client.get("/api/stats").json()["size"] == size + 2

    seen = res.text + found.__repr__() + str(found) + caplog.text
    for value in PHI.values():
        assert value not in seen and value.split("^")[0] not in seen
        for path in index_dir.rglob("*"):
            if path.is_file():
                assert value.encode() not in stored_text(path), (value, path.name)


def test_a_study_url_refuses_instances_of_other_studies(
    client: TestClient, phantom_dir: Path, tmp_path: Path
) -> None:
    film = sorted((phantom_dir / "images").glob("*.png"))[0]
    data = dicom_of(film, tmp_path, "1.2.826.0.1.8.1", "1.2.826.0.1.8.1.1.1")
    body, headers = related([("application/dicom", data)])
    res = client.post("/dicomweb/studies/1.2.826.0.1.9", content=body, headers=headers)
    assert res.status_code == 409, res.text
    failed = res.json()["00081198"]["Value"]
    assert failed[0]["00081197"]["Value"] == [STUDY_MISMATCH]
    res = client.post("/dicomweb/studies/1.2.826.0.1.8.1", content=body, headers=headers)
    assert res.status_code == 200, res.text


def test_bad_stow_requests_are_refused(client: TestClient, index_dir: Path) -> None:
    body, headers = related([("application/dicom", b"DICM")])
    assert client.post("/dicomweb/studies", content=body, headers={**headers, **{
        "Authorization": "Bearer wrong-token-0123456789"}}).status_code == 401  # fmt: skip
    no_token = {k: v for k, v in headers.items() if k != "Authorization"}
    assert client.post("/dicomweb/studies", content=body, headers=no_token).status_code == 401
    plain = {**headers, "Content-Type": "application/dicom"}
    res = client.post("/dicomweb/studies", content=body, headers=plain)
    assert res.status_code == 415 and "multipart/related" in res.json()["error"]["message"]
    json_parts = {**headers, "Content-Type": headers["Content-Type"].replace(
        "application/dicom", "application/dicom+json")}  # fmt: skip
    assert client.post("/dicomweb/studies", content=body, headers=json_parts).status_code == 415
    cut = body[: len(body) // 2]
    res = client.post("/dicomweb/studies", content=cut, headers=headers)
    assert res.status_code in (400, 409), res.text
    res = client.post("/dicomweb/studies/not-a-uid", content=body, headers=headers)
    assert res.status_code == 422
    closed = TestClient(create_app(index_dir))  # no token: writes are off
    assert closed.post("/dicomweb/studies", content=body, headers=headers).status_code == 403
    assert client.get("/api/health").status_code == 200


def test_a_chunked_push_is_counted_as_it_arrives(index_dir: Path) -> None:
    client = TestClient(create_app(index_dir, api_token=TOKEN.encode(), max_upload_bytes=1000))
    _, headers = related([])
    chunks = (b"x" * 50_000 for _ in range(4))  # no Content-Length: sent chunked
    res = client.post("/dicomweb/studies", content=chunks, headers=headers)
    assert res.status_code == 413 and res.json()["error"]["code"] == "upload_too_large"
    search = client.post(
        "/api/search",
        content=(b"x" for _ in range(2)),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert search.status_code == 411  # the other uploads still need a Content-Length
