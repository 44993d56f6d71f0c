"""An index on the milvus backend end to end: ``cxrhash index`` creates, appends to and
verifies it, ``cxrhash search`` and the server (``create_app``) answer from it exactly as from
a ``flat`` index of the same films in the same order, and bad settings are one-line errors.

One Milvus Lite file for the module (its server is started once and released after);
skipped only where pymilvus or Milvus Lite cannot be imported.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cxrhash.cli import app
from cxrhash.index.backends import milvus as milvus_module
from cxrhash.index.backends.milvus import MilvusBackend
from cxrhash.index.errors import HashIndexError
from cxrhash.index.store import HashIndex
from cxrhash.serve import create_app

pytestmark = pytest.mark.slow  # Milvus Lite's start, four index runs: about 40 s

runner = CliRunner()


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for Milvus Lite files; every server started for one is released after."""
    try:
        import pymilvus  # noqa: F401 - the client the backend imports lazily
        from milvus_lite.server_manager import server_manager_instance
    except ImportError as err:
        pytest.skip(f"Milvus Lite is not installed (pip install 'cxrhash[milvus]'): {err}")
    folder = tmp_path_factory.mktemp("lite")
    yield folder
    for db in folder.rglob("*.db"):
        server_manager_instance.release_server(str(db))


@pytest.fixture(scope="module")
def built(lite: Path, phantom_dir: Path, tiny_run: Path) -> dict[str, Any]:
    """A milvus index (its Lite file inside its folder) and a flat one of the session's tiny
    model, each made from the database part first and the rest appended, through the CLI."""
    run = tiny_run
    idx, flat = lite / "idx", lite / "flat"
    milvus = ["--backend", "milvus", "--backend-param", f"uri={idx}/codes.db"]
    milvus += ["--backend-param", "collection=films"]
    base = ["index", "--checkpoint", str(run), "--data", f"phantom:{phantom_dir}"]
    outputs = []
    for out, extra in ((idx, milvus), (flat, [])):
        outputs.append(ok([*base, "--part", "database", "--out", str(out), *extra]))
        outputs.append(ok([*base, "--out", str(out)]))  # appends what is new
    return {"run": run, "idx": idx, "flat": flat, "outputs": outputs}


def ok(args: list[str]) -> str:
    """Run the CLI; its output after checking it succeeded."""
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def fails(args: list[str]) -> str:
    """Run the CLI expecting a user error: exit 2 and one ``error:`` line."""
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.output, res.exception)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def films(phantom_dir: Path, n: int) -> list[Path]:
    """The first ``n`` phantom films."""
    return sorted((phantom_dir / "images").glob("*.png"))[:n]


def search_json(index: Path, queries: list[Path], k: int) -> list[list[tuple[str, int, str]]]:
    """``cxrhash search --json``: per query, its hits as (case id, distance, findings)."""
    out = ok(["search", *map(str, queries), "--index", str(index), "-k", str(k), "--json"])
    return [
        [(h["case_id"], h["distance"], h["findings"]) for h in entry["hits"]]
        for entry in json.loads(out)
    ]


def test_cli_creates_appends_verifies_and_searches(built: dict[str, Any], phantom_dir: Path):
    first, second, *_ = built["outputs"]
    assert "added 25 images" in first and "holds 25" in first
    assert "added 95 images" in second and "25 already indexed" in second
    manifest = json.loads((built["idx"] / "index.json").read_text())
    assert manifest["backend"]["name"] == "milvus"
    assert manifest["backend"]["params"]["uri"] == str(built["idx"] / "codes.db")
    with HashIndex.open(built["flat"]) as flat:
        codes = np.asarray(flat.codes)
    stored = MilvusBackend(16, uri=str(built["idx"] / "codes.db"), collection="films")
    try:  # the collection holds every film's code under its row id, as the shard does
        np.testing.assert_array_equal(stored.ids, np.arange(120))
        np.testing.assert_array_equal(stored.stored_codes(stored.ids), codes)
    finally:
        stored.close()
    verified = ok(["index", "--verify", "--index", str(built["idx"])])
    assert verified.startswith(f"OK {built['idx']}: 120 rows (0 removed)")
    assert "Milvus collection 'films'" in verified and "holds the same 120 codes" in verified
    queries = films(phantom_dir, 4)
    hits = search_json(built["idx"], queries, 30)
    assert hits == search_json(built["flat"], queries, 30)
    assert [len(row) for row in hits] == [30] * 4 and all(row[0][1] == 0 for row in hits)


def test_removed_rows_leave_the_collection_and_a_foreign_copy_is_refused(
    built: dict[str, Any], lite: Path, phantom_dir: Path
):
    idx = lite / "copy"
    ok(
        ["index", "--checkpoint", str(built["run"]), "--data", f"phantom:{phantom_dir}"]
        + ["--out", str(idx), "--backend", "milvus", "--backend-param", f"uri={lite}/other.db"]
    )
    query = films(phantom_dir, 1)
    own = search_json(idx, query, 1)[0][0][0]
    with HashIndex.open(idx) as index:
        assert index.remove([query[0].name]) == 1
    noted = ok(["index", "--verify", "--index", str(idx)])
    assert "still holds 1 removed row(s)" in noted  # deleted at the next search
    assert own not in [h[0] for h in search_json(idx, query, 119)[0]]
    assert "holds the same 119 codes" in ok(["index", "--verify", "--index", str(idx)])

    store = MilvusBackend(16, uri=f"{lite}/other.db", collection="cxrhash")
    try:  # another writer changes one code behind the index's back
        row = int(store.ids[5])
        code = store.stored_codes(np.array([row]))
        store.remove(np.array([row]))
        store.add(np.array([row]), code ^ np.uint8(1))
    finally:
        store.close()
    res = runner.invoke(app, ["index", "--verify", "--index", str(idx)])
    assert res.exit_code == 1 and f"holds other codes than the shard under 1 id(s) ({row})" in (
        res.output
    )
    with HashIndex.open(idx) as index, pytest.raises(HashIndexError, match="another index"):
        index.search_packed(np.zeros((1, 2), np.uint8), 3)


def test_bad_settings_are_one_line_errors(
    built: dict[str, Any], lite: Path, phantom_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    base = ["index", "--checkpoint", str(built["run"]), "--data", f"phantom:{phantom_dir}"]
    base += ["--backend", "milvus"]

    def error(name: str, *params: str) -> str:
        pairs = [arg for p in params for arg in ("--backend-param", p)]
        message = fails([*base, "--out", str(lite / name), *pairs])
        assert not (lite / name / "index.json").exists()  # no index was made
        return message

    assert "needs a uri: a Milvus Lite file (uri=PATH.db)" in error("a", "collection=x")
    assert "uri must be a Milvus Lite file ending in .db or a server address" in error(
        "b", "uri=codes.sqlite"
    )
    assert "no Milvus server answered at uri 'http://127.0.0.1:9' within 1 s" in error(
        "c", "uri=http://127.0.0.1:9", "timeout=1"
    )
    assert f"cannot open the Milvus Lite file at uri '{lite}/none/x.db'" in error(
        "d", f"uri={lite}/none/x.db"
    )
    taken = error("e", f"uri={built['idx']}/codes.db", "collection=films")
    assert "Milvus collection 'films'" in taken and "already holds 120 codes" in taken
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if the extra were not installed
    assert 'pip install "cxrhash[milvus]"' in error("f", f"uri={lite}/f.db")
    film = str(films(phantom_dir, 1)[0])
    missing = fails(["search", film, "--index", str(built["idx"])])
    assert missing == (  # the index is fine: not "index.json: bad search backend"
        'error: the milvus backend needs pymilvus and milvus-lite: pip install "cxrhash[milvus]"'
    )


def test_the_server_answers_from_milvus_like_from_flat(
    built: dict[str, Any], phantom_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    threads: list[str] = []
    connect = milvus_module.connect

    def spy(uri: str, timeout: float) -> object:
        threads.append(threading.current_thread().name)
        return connect(uri, timeout)

    monkeypatch.setattr(milvus_module, "connect", spy)
    with (
        TestClient(create_app(built["idx"])) as milvus,
        TestClient(create_app(built["flat"])) as flat,
    ):
        stats = milvus.get("/api/stats").json()
        assert (stats["backend"], stats["size"]) == ("milvus", 120)
        assert flat.get("/api/stats").json()["backend"] == "flat"
        for film in films(phantom_dir, 3):
            answers = []
            for client in (milvus, flat):
                files = {"image": ("x.png", film.read_bytes(), "image/png")}
                res = client.post("/api/search", files=files, params={"k": 25})
                assert res.status_code == 200, res.text
                answers.append([(h["case_id"], h["distance"]) for h in res.json()["hits"]])
            assert answers[0] == answers[1] and len(answers[0]) == 25
    # the client was made on the server's search thread, the one that uses it
    assert threads and all(name.startswith("cxrhash-search") for name in threads)


def test_each_shard_has_a_collection_and_results_equal_flat(lite: Path, tmp_path: Path):
    rng = np.random.default_rng(4)
    codes = np.packbits(rng.integers(0, 2, size=(130, 16)).astype(np.uint8), axis=1)
    codes[60:90] = codes[0]  # a tie group across shards
    made = []
    for backend, params in (("milvus", {"uri": str(lite / "shards.db")}), ("flat", {})):
        index = HashIndex.create(
            tmp_path / backend,
            16,
            "m",
            backend=backend,
            backend_params=params,
            shard_size=50,
            source_names=True,
        )
        index.add(codes[:100], [f"c{i}" for i in range(100)], ["x"] * 100)
        index.search_packed(codes[:1], 1)  # the backends are built, then brought up to date
        index.add(codes[100:], [f"c{i}" for i in range(100, 130)], ["x"] * 30)
        made.append(index)
    try:
        assert made[0].n_shards == 3
        for k in (1, 40, 130):
            got, want = (index.search_packed(codes[::7], k) for index in made)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)
    finally:
        for index in made:
            index.close()
    for shard, name in enumerate(("cxrhash", "cxrhash_s0001", "cxrhash_s0002")):
        store = MilvusBackend(16, uri=str(lite / "shards.db"), collection=name, create=False)
        try:
            rows = np.arange(50 * shard, min(50 * shard + 50, 130))
            np.testing.assert_array_equal(store.ids, rows)
            np.testing.assert_array_equal(store.stored_codes(rows), codes[rows])
        finally:
            store.close()
