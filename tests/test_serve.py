"""The retrieval server (issue #13, first increment) through FastAPI's TestClient, on a tiny
trained model and a pseudonymous index of the phantom films."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import build_phantom_index, stored_text, write_dicom
from fastapi.testclient import TestClient
from hostile_files import grey_dataset, write_blank_png
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from cxrhash.index.store import HashIndex
from cxrhash.serve import create_app

PHI = {"PatientName": "DOE^JANE", "PatientID": "MRN0012345"}


@pytest.fixture(scope="module")
def index_dir(tiny_run: Path, phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_phantom_index(tiny_run, phantom_dir, tmp_path_factory.mktemp("serve") / "idx")


@pytest.fixture(scope="module")
def client(index_dir: Path) -> TestClient:
    return TestClient(create_app(index_dir))


def upload(client: TestClient, data: bytes, name: str = "film.png", **params: object):
    """POST one file as the ``image`` field of /api/search."""
    files = {"image": (name, data, "image/png")}
    return client.post("/api/search", files=files, params=params)


def assert_error(res, status: int, code: str) -> str:
    """The JSON error's message, after checking its status, shape and code."""
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code, body
    return body["error"]["message"]


def test_health_stats_and_request_id(client: TestClient, index_dir: Path) -> None:
    res = client.get("/api/health")
    assert res.json() == {"status": "ok"}
    assert len(res.headers["X-Request-ID"]) == 32
    assert res.headers["X-Request-ID"] != client.get("/api/health").headers["X-Request-ID"]
    stats = client.get("/api/stats").json()
    with HashIndex.open(index_dir) as index:
        assert stats["size"] == len(index) == 120
        assert (stats["bits"], stats["shards"], stats["model_id"]) == (
            index.bits,
            index.n_shards,
            index.model_id,
        )
    assert stats["image_size"] == 32 and stats["label_names"]
    assert stats["keeps_source_names"] is False and stats["backend"]
    assert stats["engine"] == {"name": "torch", "threads": None, "onnx_file": None}


def test_a_film_finds_itself_first(client: TestClient, phantom_dir: Path, index_dir: Path):
    film = sorted((phantom_dir / "images").glob("*.png"))[7]
    res = upload(client, film.read_bytes(), name="anything.bin", k=5)
    assert res.status_code == 200, res.text
    body = res.json()
    assert len(body["hits"]) == 5 and [h["rank"] for h in body["hits"]] == list(range(5))
    with HashIndex.open(index_dir) as index:
        own = index.stored_case_id(film.name)
        assert body["model_id"] == index.model_id
    first = body["hits"][0]
    assert (first["case_id"], first["distance"]) == (own, 0)
    assert set(body["predicted"]) == set(client.get("/api/stats").json()["label_names"])
    assert body["predicted_findings"] == [n for n, p in body["predicted"].items() if p >= 0.5]
    for hit in body["hits"]:
        assert set(hit["shared_findings"]) <= set(hit["findings"]) & set(body["predicted_findings"])
    assert set(body["timings"]) == {"decode_ms", "encode_ms", "search_ms"}
    case = client.get(f"/api/cases/{own}").json()
    assert case == {
        "case_id": own,
        "findings": first["findings"],
        "source_path": None,
        "pacs": None,
    }


@pytest.mark.parametrize("rerank", ["none", "asymmetric"])
def test_k_and_rerank_are_respected(client: TestClient, phantom_dir: Path, rerank: str) -> None:
    film = sorted((phantom_dir / "images").glob("*.png"))[0].read_bytes()
    body = upload(client, film, k=13, rerank=rerank).json()
    assert len(body["hits"]) == 13 and body["rerank"] == rerank
    assert (body["hits"][0]["score"] is None) == (rerank == "none")


def test_bad_options_are_json_422(client: TestClient, phantom_dir: Path) -> None:
    film = sorted((phantom_dir / "images").glob("*.png"))[0].read_bytes()
    for params in ({"k": 0}, {"k": 101}, {"rerank": "magic"}):
        assert_error(upload(client, film, **params), 422, "invalid_request")
    assert_error(upload(client, film, rerank="floats"), 422, "rerank_unavailable")
    assert_error(client.post("/api/search"), 422, "invalid_request")  # no file field
    assert_error(client.get("/api/nowhere"), 404, "not_found")
    assert_error(client.get("/api/search"), 405, "method_not_allowed")


def _no_pixel_dicom(path: Path) -> bytes:
    grey_dataset(ExplicitVRLittleEndian, 64, 64).save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _png_bytes(size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.usefixtures("default_pixel_limit")
def test_unreadable_uploads_are_422_and_the_server_lives_on(
    client: TestClient, tmp_path: Path
) -> None:
    bad = {
        "empty": b"",
        "truncated png": _png_bytes()[:60],
        "pdf named png": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
        "zip bomb": write_blank_png(tmp_path / "bomb.png", 20000, 20000).read_bytes(),
        "dicom without pixels": _no_pixel_dicom(tmp_path / "nopix.dcm"),
    }
    for what, data in bad.items():
        message = assert_error(upload(client, data), 422, "unreadable_image")
        assert message and "cxrhash-upload" not in message, what
        assert client.get("/api/health").status_code == 200


def test_uploads_over_the_limit_are_413(index_dir: Path) -> None:
    small = TestClient(create_app(index_dir, max_upload_bytes=10_000))
    over = _png_bytes() + bytes(10_000)  # past the file limit, within the body's framing room
    assert_error(upload(small, over), 413, "upload_too_large")
    far_over = bytes(500_000)  # refused from Content-Length, before the body is read
    assert_error(upload(small, far_over), 413, "upload_too_large")
    assert small.get("/api/health").json() == {"status": "ok"}


def test_cases_unknown_and_invalid(client: TestClient) -> None:
    assert_error(client.get("/api/cases/c-000000000000000000000000"), 404, "unknown_case")
    for bad in ("..etc", "a" * 129, "bad%20id", "-leading-dash", "semi;colon"):
        assert_error(client.get(f"/api/cases/{bad}"), 422, "invalid_request")
    assert_error(client.get("/api/cases/..%2Fetc"), 404, "not_found")  # no such route


def test_patient_data_stays_out_of_answers_logs_and_index(
    client: TestClient, index_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pixels = np.random.default_rng(0).integers(0, 4096, (64, 64))
    film = write_dicom(tmp_path / "DOE_JANE_MRN0012345.dcm", pixels, **PHI)
    with caplog.at_level(logging.DEBUG):
        res = upload(client, film.read_bytes(), name=film.name)
        bad = upload(client, film.read_bytes()[:400], name=film.name)
    assert res.status_code == 200 and bad.status_code == 422
    secrets = [*PHI.values(), "DOE", "JANE", "0012345"]
    seen = res.text + bad.text + str(dict(res.headers)) + caplog.text
    assert "request " in caplog.text  # the request lines were captured
    assert not [s for s in secrets if s in seen]
    for path in index_dir.rglob("*"):
        if path.is_file():
            content = stored_text(path)
            assert not [s for s in secrets if s.encode() in content], path


def test_an_unreachable_search_backend_is_503_and_the_server_lives_on(
    client: TestClient, phantom_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxrhash.index.backends.base import BackendError

    def down(*args: object, **kwargs: object) -> None:
        raise BackendError("no Milvus server answered at uri 'http://db:19530'")

    monkeypatch.setattr(client.app.state.searcher.index, "search", down)  # type: ignore[attr-defined]
    film = sorted((phantom_dir / "images").glob("*.png"))[0].read_bytes()
    message = assert_error(upload(client, film), 503, "backend_unavailable")
    assert "db:19530" not in message  # the operator's log has it, not the client
    monkeypatch.undo()
    assert upload(client, film).status_code == 200


def test_the_schema_documents_every_answer(client: TestClient) -> None:
    """The search route sends its own JSON; the OpenAPI schema must still describe it."""
    paths = client.get("/openapi.json").json()["paths"]
    ok = paths["/api/search"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/SearchResult"}
    assert paths["/api/cases/{case_id}"]["get"]["responses"]["404"]["content"]
