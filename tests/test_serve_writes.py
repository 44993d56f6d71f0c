"""Adding and removing cases through the retrieval API (issue #13): the token, the answers of
``POST /api/cases`` and ``DELETE /api/cases/{id}``, the upload rate limit, searches served
during a bulk add, and commits of another process seen without a restart."""

from __future__ import annotations

import hashlib
import logging
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import build_phantom_index, stored_text, write_dicom
from fastapi.testclient import TestClient

from cxrhash.data.dataset import CXRDataset
from cxrhash.data.phantom import write_phantom_dataset
from cxrhash.data.readers import open_dataset
from cxrhash.index.store import HashIndex
from cxrhash.retrieve import build_index, findings_text
from cxrhash.serve import create_app
from cxrhash.serve.write_guard import TOKEN_ENV, TokenError, load_api_token

TOKEN = "s3cret-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHI = {"PatientName": "DOE^JANE", "PatientID": "MRN0012345"}


@pytest.fixture(scope="module")
def built(
    tiny_run: Path, phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(checkpoint, index of the 120 phantom films) of the session's tiny trained model."""
    out = build_phantom_index(tiny_run, phantom_dir, tmp_path_factory.mktemp("writes") / "idx")
    return tiny_run / "best.pt", out


@pytest.fixture(scope="module")
def new_films(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """40 phantom films not in the index, with their findings text."""
    folder = write_phantom_dataset(tmp_path_factory.mktemp("new") / "data", 40, 64, seed=11)
    ds = open_dataset(f"phantom:{folder}", 32)
    assert ds.paths is not None
    return [(Path(p), findings_text(ds.labels[i], ds.pathologies)) for i, p in enumerate(ds.paths)]


@pytest.fixture
def index_dir(built: tuple[Path, Path], tmp_path: Path) -> Path:
    """A fresh copy of the index for a test that changes it."""
    return Path(shutil.copytree(built[1], tmp_path / "idx"))


def client_of(index_dir: Path, **kw: object) -> TestClient:
    kw.setdefault("api_token", TOKEN.encode())
    return TestClient(create_app(index_dir, **kw))  # type: ignore[arg-type]


def add(client: TestClient, films: list[tuple[str, bytes, str]], headers=AUTH, **form):
    """POST ``(file name, bytes, findings)`` films to /api/cases."""
    files = [("images", (name, data, "application/octet-stream")) for name, data, _ in films]
    data = {"findings": [f for _, _, f in films], **form}
    return client.post("/api/cases", files=files, data=data, headers=headers)


def search(client: TestClient, data: bytes, k: int = 100):
    return client.post("/api/search", files={"image": ("q", data, "image/png")}, params={"k": k})


def assert_error(res, status: int, code: str) -> str:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


def stored_ids(index_dir: Path) -> set[str]:
    with HashIndex.open(index_dir) as index:
        return {case for _, case, _ in index.iter_metadata()}


def test_writes_need_the_right_token(index_dir: Path, new_films) -> None:
    film = [("a.png", new_films[0][0].read_bytes(), new_films[0][1])]
    closed = client_of(index_dir, api_token=None)
    message = assert_error(add(closed, film), 403, "writes_disabled")
    assert "--token-file" in message
    assert_error(closed.delete("/api/cases/c-1234", headers=AUTH), 403, "writes_disabled")
    client = client_of(index_dir)
    for headers, code in (
        ({}, "token_required"),
        ({"Authorization": f"Basic {TOKEN}"}, "token_required"),
        ({"Authorization": "Bearer " + TOKEN[:-1]}, "invalid_token"),
        ({"Authorization": "Bearer " + TOKEN + "x"}, "invalid_token"),
    ):
        res = add(client, film, headers=headers)
        assert_error(res, 401, code)
        assert res.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in res.text
        assert_error(client.delete("/api/cases/c-1234", headers=headers), 401, code)
    assert client.get("/api/stats").json()["size"] == 120
    assert add(client, film).status_code == 200
    assert client.get("/api/stats").json()["size"] == 121


def test_added_films_are_found_with_their_findings(
    index_dir: Path, new_films, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_of(index_dir)
    pixels = np.random.default_rng(5).integers(0, 4096, (64, 64))
    dicom = write_dicom(tmp_path / "DOE_JANE.dcm", pixels, **PHI).read_bytes()
    films = [
        ("DOE_JANE_1.png", new_films[1][0].read_bytes(), "Mass|effusion"),
        ("DOE_JANE.dcm", dicom, "No Finding"),
        ("x.png", new_films[2][0].read_bytes(), new_films[2][1]),
    ]
    with caplog.at_level(logging.DEBUG):
        res = add(client, films, patient_ids=["MRN0012345", "", ""])
    assert res.status_code == 200, res.text
    body = res.json()
    assert [a["image"] for a in body["added"]] == [0, 1, 2]
    assert body["already_present"] == body["refused"] == [] and body["size"] == 123
    ids = [a["case_id"] for a in body["added"]]
    assert all(i.startswith("c-") for i in ids) and len(set(ids)) == 3
    expected = ["Effusion|Mass", "No Finding", new_films[2][1]]
    for (_, data, _), case_id, text in zip(films, ids, expected, strict=True):
        hits = search(client, data).json()["hits"]
        mine = [h for h in hits if h["case_id"] == case_id]
        assert mine and mine[0]["distance"] == 0 and mine[0]["findings"] == text.split("|")
        assert client.get(f"/api/cases/{case_id}").json()["findings"] == text.split("|")
    again = add(client, films[::-1]).json()
    assert again["added"] == [] and again["size"] == 123
    assert {(r["image"], r["case_id"]) for r in again["already_present"]} == {
        (2 - i, c) for i, c in enumerate(ids)
    }
    with HashIndex.open(index_dir) as index:  # the DICOM's own PatientID, as its pseudonym
        patient = index.patient_hash(PHI["PatientID"])
        own = index.patient_hash(f"unknown-sha256-{hashlib.sha256(films[2][1]).hexdigest()}")
    with sqlite3.connect(index_dir / "meta.sqlite") as db:
        stored = dict(db.execute("SELECT case_id, patient_hash FROM items").fetchall())
    assert [stored[i] for i in ids] == [patient, patient, own]
    secrets = [*PHI.values(), "DOE", "JANE", "0012345"]
    seen = res.text + str(again) + caplog.text
    assert not [s for s in secrets if s in seen]
    for path in index_dir.rglob("*"):
        if path.is_file():
            assert not [s for s in secrets if s.encode() in stored_text(path)], path


def test_refused_files_are_reported_and_the_others_added(index_dir: Path, new_films) -> None:
    client = client_of(index_dir)
    good = new_films[3][0].read_bytes()
    films = [
        ("DOE_JANE.png", good, new_films[3][1]),
        ("DOE_JANE.pdf.png", b"%PDF-1.4\n%%EOF\n", "No Finding"),
        ("ok.png", new_films[4][0].read_bytes(), "Mass|Banana"),
        ("empty.png", b"", "No Finding"),
        ("again.png", good, "No Finding"),  # the same file twice: added once
        ("both.png", new_films[5][0].read_bytes(), "No Finding|Mass"),
    ]
    body = add(client, films).json()
    assert [a["image"] for a in body["added"]] == [0]
    assert [(p["image"], p["case_id"]) for p in body["already_present"]] == [
        (4, body["added"][0]["case_id"])
    ]
    refused = {r["image"]: r["code"] for r in body["refused"]}
    assert refused == {
        1: "unreadable_image",
        2: "invalid_findings",
        3: "unreadable_image",
        5: "invalid_findings",
    }
    assert "DOE" not in str(body) and "Banana" not in str(body) and body["size"] == 121
    message = assert_error(add(client, [films[1], films[3]]), 422, "nothing_added")
    assert "image 0" in message and "image 1" in message
    assert_error(add(client, films[:2], findings=["No Finding"]), 422, "invalid_request")
    assert_error(add(client, films[:1], patient_ids=["a", "b"]), 422, "invalid_request")
    assert client.get("/api/stats").json()["size"] == 121


def test_the_upload_limit_covers_adds(index_dir: Path, new_films) -> None:
    client = client_of(index_dir, max_upload_bytes=20_000)
    film = new_films[8][0].read_bytes()
    assert len(film) < 10_000
    over = film + bytes(25_000 - len(film))  # past the file limit, within the body's framing
    body = add(client, [("a.png", film, "No Finding"), ("b.png", over, "No Finding")]).json()
    assert len(body["added"]) == 1 and body["refused"][0]["code"] == "upload_too_large"
    many = [(f"{i}.png", film, "No Finding") for i in range(40)]  # over in total, framing too
    assert_error(add(client, many), 413, "upload_too_large")
    assert client.get("/api/stats").json()["size"] == 121


def test_a_removed_case_is_gone(index_dir: Path, new_films, phantom_dir: Path) -> None:
    client = client_of(index_dir)
    data = new_films[6][0].read_bytes()
    case_id = add(client, [("f.png", data, "No Finding")]).json()["added"][0]["case_id"]
    res = client.delete(f"/api/cases/{case_id}", headers=AUTH)
    assert res.status_code == 204 and res.content == b""
    assert_error(client.get(f"/api/cases/{case_id}"), 404, "unknown_case")
    assert case_id not in {h["case_id"] for h in search(client, data).json()["hits"]}
    assert_error(client.delete(f"/api/cases/{case_id}", headers=AUTH), 404, "unknown_case")
    assert_error(client.delete("/api/cases/..etc", headers=AUTH), 422, "invalid_request")
    old = search(client, sorted((phantom_dir / "images").glob("*.png"))[7].read_bytes(), 1)
    first = old.json()["hits"][0]["case_id"]
    assert client.delete(f"/api/cases/{first}", headers=AUTH).status_code == 204
    assert client.get("/api/stats").json()["size"] == 119
    assert first not in stored_ids(index_dir) and case_id not in stored_ids(index_dir)
    again = add(client, [("f.png", data, "Mass")]).json()  # a removed film may come back
    assert [a["case_id"] for a in again["added"]] == [case_id]


def test_uploads_are_rate_limited_per_client_then_recover(index_dir: Path, new_films) -> None:
    client = client_of(index_dir, upload_rate="2/2 seconds")
    data = new_films[7][0].read_bytes()
    assert search(client, data).status_code == 200
    assert add(client, [("f.png", data, "No Finding")]).status_code == 200
    limited = search(client, data)
    assert_error(limited, 429, "rate_limited")
    wait = int(limited.headers["Retry-After"])
    assert 1 <= wait <= 2 and "X-Request-ID" in limited.headers
    assert_error(add(client, [("f.png", data, "No Finding")]), 429, "rate_limited")
    assert client.get("/api/health").status_code == 200  # only uploads count
    assert client.get("/api/stats").status_code == 200
    time.sleep(wait + 0.1)
    assert search(client, data).status_code == 200
    unlimited = client_of(index_dir, upload_rate=None)
    assert all(search(unlimited, data, 1).status_code == 200 for _ in range(5))


def test_searches_during_a_bulk_add_see_only_committed_cases(index_dir: Path, new_films) -> None:
    client = client_of(index_dir, upload_rate=None, commit_every=4)
    before = stored_ids(index_dir)
    queries = [p.read_bytes() for p, _ in new_films[::5]]
    seen_hits: list[str] = []
    sizes: list[int] = []
    failures: list[str] = []
    done = threading.Event()

    def searching(offset: int) -> None:
        i = offset
        while not done.is_set():
            res = search(client, queries[i % len(queries)])
            if res.status_code != 200:
                failures.append(res.text)
            else:
                seen_hits.extend(h["case_id"] for h in res.json()["hits"])
            i += 1

    def polling() -> None:
        while not done.is_set():
            sizes.append(client.get("/api/stats").json()["size"])

    threads = [threading.Thread(target=searching, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=polling))
    for t in threads:
        t.start()
    try:
        films = [(f"{i}.png", p.read_bytes(), f) for i, (p, f) in enumerate(new_films)]
        res = add(client, films)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert res.status_code == 200, res.text
    added = {a["case_id"] for a in res.json()["added"]}
    assert len(added) == 40 and res.json()["size"] == 160
    assert not failures and seen_hits and sizes
    assert set(seen_hits) <= before | added
    assert sizes == sorted(sizes)
    assert len(set(sizes)) >= 3  # requests were answered between the commits of the add
    assert set(sizes) <= {120 + 4 * j for j in range(11)}  # only whole commits of 4 films
    assert stored_ids(index_dir) == before | added


def test_commits_of_another_process_are_served_without_restart(
    built: tuple[Path, Path], index_dir: Path, new_films
) -> None:
    client = client_of(index_dir)
    assert client.get("/api/stats").json()["size"] == 120
    films = open_dataset(f"phantom:{new_films[0][0].parent.parent}", 32).subset(np.arange(10))
    other = CXRDataset(  # new names: the phantom's own are those of the index's films
        case_ids=[f"night-{c}" for c in films.case_ids],
        patient_ids=films.patient_ids,
        labels=films.labels,
        pathologies=films.pathologies,
        paths=films.paths,
        image_size=32,
    )
    build_index(built[0], other, index_dir, progress=False)  # as a nightly `cxrhash index`
    assert client.get("/api/stats").json()["size"] == 130
    with HashIndex.open(index_dir) as index:
        theirs = index.stored_case_id(other.case_ids[0])
    hits = search(client, new_films[0][0].read_bytes()).json()["hits"]
    assert [h["distance"] for h in hits if h["case_id"] == theirs] == [0]
    body = add(client, [("f.png", new_films[20][0].read_bytes(), "No Finding")]).json()
    assert len(body["added"]) == 1 and body["size"] == 131
    with HashIndex.open(index_dir) as index:
        index.remove([other.case_ids[0]])
    assert_error(client.get(f"/api/cases/{theirs}"), 404, "unknown_case")
    assert client.get("/api/stats").json()["size"] == 130
    assert client.app.state.refresher.reopened == 2  # its add and removal; not our own add


def test_the_token_file_must_be_private_and_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert load_api_token(None) is None
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o640)
    with pytest.raises(TokenError, match="chmod 600"):
        load_api_token(path)
    path.chmod(0o600)
    assert load_api_token(path) == TOKEN.encode()
    path.write_text("short\n")
    with pytest.raises(TokenError, match="at least 16") as err:
        load_api_token(path)
    assert "short" not in str(err.value)
    path.write_text("with a space in the token\n")
    with pytest.raises(TokenError, match="visible ASCII"):
        load_api_token(path)
    with pytest.raises(TokenError, match="cannot read"):
        load_api_token(tmp_path / "absent")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert load_api_token(None) == TOKEN.encode()
