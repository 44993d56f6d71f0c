"""What ``POST /api/search`` answers for the viewer: the query's preview and heat-map, a
finding filter, thumbnails of the cases' films (issue #13)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import build_phantom_index
from fastapi.testclient import TestClient
from PIL import Image

from cxrhash.data.images import load_image
from cxrhash.serve import create_app


@pytest.fixture(scope="module")
def pseudonymous(tiny_run: Path, phantom_dir: Path, tmp_path_factory) -> Path:
    return build_phantom_index(tiny_run, phantom_dir, tmp_path_factory.mktemp("answers") / "idx")


@pytest.fixture(scope="module")
def client(pseudonymous: Path) -> TestClient:
    return TestClient(create_app(pseudonymous))


def films(phantom_dir: Path) -> list[Path]:
    return sorted((phantom_dir / "images").glob("*.png"))


def search(client: TestClient, film: Path, **params: object):
    res = client.post("/api/search", files={"image": ("x", film.read_bytes())}, params=params)
    assert res.status_code == 200, res.text
    return res.json()


def test_the_answer_carries_the_films_preview_and_heat_map(client, phantom_dir):
    film = films(phantom_dir)[3]
    body = search(client, film, k=3)
    q = body["query"]
    pixels = np.frombuffer(base64.b64decode(q["pixels"]), dtype="<u2")
    grey = load_image(film)
    assert pixels.reshape(q["height"], q["width"]).shape == grey.shape
    order = np.argsort(grey.ravel(), kind="stable")
    assert np.all(np.diff(pixels[order].astype(np.int64)) >= 0)  # same order of values
    assert q["dicom"] is False and q["inverted"] is False and q["window_width"] > 0
    hm = body["heatmap"]
    values = np.array(hm["values"])
    assert values.shape == (hm["height"], hm["width"]) and hm["kind"] == "attention"
    assert values.min() == 0 and values.max() == 1
    assert search(client, film, k=3, preview=False)["query"] is None


def test_the_finding_filter(client, phantom_dir):
    film = films(phantom_dir)[0]
    plain = search(client, film, k=100)
    counts: dict[str, int] = {}
    for hit in plain["hits"]:
        for f in hit["findings"]:
            counts[f] = counts.get(f, 0) + 1
    rare = min(counts, key=counts.__getitem__)
    body = search(client, film, k=5, finding=rare)
    assert body["finding_filter"] == [rare] and body["searched"] >= 100
    expected = [h["case_id"] for h in plain["hits"] if rare in h["findings"]][:5]
    assert [h["case_id"] for h in body["hits"]] == expected
    assert [h["rank"] for h in body["hits"]] == list(range(len(expected)))
    res = client.post(
        "/api/search", files={"image": ("x", film.read_bytes())}, params={"finding": "Dragons"}
    )
    assert res.status_code == 422 and res.json()["error"]["code"] == "unknown_finding"


def test_without_films_the_server_says_so(client, phantom_dir):
    body = search(client, films(phantom_dir)[1], k=2)
    assert all(h["thumbnail_url"] is None for h in body["hits"])
    assert client.get("/api/stats").json()["serves_images"] is False
    res = client.get(f"/api/cases/{body['hits'][0]['case_id']}/image")
    assert res.status_code == 404 and res.json()["error"]["code"] == "no_image"
    assert "--images" in res.json()["error"]["message"]


def _thumbnail_is_the_film(client: TestClient, url: str, film: Path) -> None:
    res = client.get(url)
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    thumb = np.asarray(Image.open(io.BytesIO(res.content)), dtype=np.float64) / 255
    grey = load_image(film)
    assert thumb.shape == grey.shape  # phantom films are under 512 px: not shrunk
    assert np.abs(thumb - grey).max() <= 1 / 255 + 1e-6


def test_images_of_a_pseudonymous_index_come_through_the_dataset(pseudonymous, phantom_dir):
    served = TestClient(create_app(pseudonymous, images=f"phantom:{phantom_dir}"))
    film = films(phantom_dir)[5]
    first = search(served, film, k=3)["hits"][0]
    assert first["distance"] == 0 and first["thumbnail_url"].endswith("/image")
    _thumbnail_is_the_film(served, first["thumbnail_url"], film)
    assert served.get("/api/stats").json()["serves_images"] is True


def test_images_of_an_index_keeping_source_names(tiny_run, phantom_dir, tmp_path):
    out = build_phantom_index(tiny_run, phantom_dir, tmp_path / "named", keep_source_names=True)
    served = TestClient(create_app(out))
    film = films(phantom_dir)[9]
    first = search(served, film, k=1)["hits"][0]
    assert first["case_id"] == film.name
    _thumbnail_is_the_film(served, first["thumbnail_url"], film)


def test_a_case_indexed_from_a_pacs_links_back_to_its_instance(
    tiny_run: Path, phantom_dir: Path, tmp_path: Path
) -> None:
    from cxrhash.data.images import load_resized
    from cxrhash.index.store import HashIndex
    from cxrhash.retrieve import encode_images
    from cxrhash.training.checkpoint import load_model

    model, payload = load_model(tiny_run / "best.pt")
    film = films(phantom_dir)[0]
    codes, _, _ = encode_images(model, [load_resized(film, payload["config"]["image_size"])])
    study, series, sop = "1.2.826.0.1.1", "1.2.826.0.1.2", "1.2.826.0.1.3"
    url = f"http://127.0.0.1:8042/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    with HashIndex.create(tmp_path / "idx", payload["config"]["bits"], payload["model_id"]) as ix:
        ix.add(codes, [sop], ["Mass"], source_paths=[url])
    client = TestClient(create_app(tmp_path / "idx", tiny_run / "best.pt"))
    hit = search(client, film, k=1)["hits"][0]
    expected = {"study_uid": study, "series_uid": series, "sop_uid": sop, "wado_url": url}
    assert hit["pacs"] == expected
    case = client.get(f"/api/cases/{hit['case_id']}").json()
    assert case["pacs"] == expected and case["source_path"] == url
    assert client.get(f"/api/cases/{hit['case_id']}/image").status_code == 404  # no film here
