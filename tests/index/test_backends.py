"""One suite for every Hamming search backend in cxrhash.index.backends.

Exact backends must equal the numpy reference, tie order included; the
numpy reference itself is checked against ``hamming_rank`` on id-ordered rows.
Approximate backends must reach a tie-aware recall@10 of 0.9 with generous
parameters and return true distances sorted by (distance, id). The milvus
backend runs on a Milvus Lite file made for this module (skipped, with the
reason, only where Milvus Lite cannot be imported); each backend gets its own collection.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cxrhash.index.backends import (
    BACKENDS,
    DuplicateIdError,
    HammingBackend,
    IndexFileError,
    MilvusBackend,
    UnknownIdError,
    backend_names,
    create_backend,
    id_recall,
    load_backend,
    tie_aware_recall,
)
from cxrhash.index.backends.milvus import CollectionMismatchError
from cxrhash.index.backends.milvus_client import normalise_uri
from cxrhash.index.backends.synthetic import clustered_codes, uniform_codes
from cxrhash.index.codes import hamming_distances, hamming_rank

BITS = 64
EXACT: list[tuple[str, dict[str, Any]]] = [
    ("numpy", {}),
    ("flat", {}),
    ("flat", {"tie_check": "rerank"}),
    ("distinct", {}),
    ("distinct", {"probe_radius": None}),
    ("distinct", {"probe_radius": 0}),
    ("distinct", {"probe_share": None}),  # always probes radius 0, 1, 2 first
    ("milvus", {}),
]
# A tiny search limit: boundary groups are completed by the id walk, and k > 64 scans.
MILVUS_SMALL_LIMIT: tuple[str, dict[str, Any]] = ("milvus", {"max_limit": 64, "slack": 0})
APPROXIMATE: list[tuple[str, dict[str, Any]]] = [
    ("hnsw", {"m": 32, "ef_search": 256, "ef_construction": 200}),
    ("multihash", {"nhash": 8, "nflip": 2}),
    ("ivf", {"nlist": 4, "nprobe": 2}),
]
ALL = EXACT + APPROXIMATE


def _label(config: tuple[str, dict[str, Any]]) -> str:
    name, params = config
    return name + "".join(f"-{v}" for v in params.values())


_MILVUS: dict[str, Any] = {}  # the Lite file of the running milvus test, and its open backends
_COLLECTIONS = (f"t{i}" for i in itertools.count())


@pytest.fixture(scope="module")
def milvus_lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus Lite database file; its server is stopped after the module.

    Skipped only where pymilvus or Milvus Lite cannot be imported (the ``milvus`` extra is
    not installed); once they import, a server that does not start is a test failure.
    """
    try:
        import pymilvus  # noqa: F401 - the client the backend imports lazily
        from milvus_lite.server_manager import server_manager_instance
    except ImportError as err:
        pytest.skip(f"Milvus Lite is not installed (pip install 'cxrhash[milvus]'): {err}")
    uri = str(tmp_path_factory.mktemp("milvus") / "lite.db")
    MilvusBackend(BITS, uri=uri, collection="probe").close()
    yield uri
    server_manager_instance.release_server(uri)


@pytest.fixture(autouse=True)
def _milvus_location(request: pytest.FixtureRequest) -> Iterator[None]:
    """Point ``_make`` at the Lite file for tests parametrized with a milvus config."""
    callspec = getattr(request.node, "callspec", None)
    config = callspec.params.get("config") if callspec else None
    if config is None or config[0] != "milvus":
        yield
        return
    _MILVUS.update(uri=request.getfixturevalue("milvus_lite"), open=[])
    yield
    for backend in _MILVUS.pop("open"):
        backend.close()


def _make(config: tuple[str, dict[str, Any]], bits: int = BITS) -> HammingBackend:
    name, params = config
    if name != "milvus":
        return create_backend(name, bits, **params)
    backend = create_backend(
        name, bits, uri=_MILVUS["uri"], collection=next(_COLLECTIONS), **params
    )
    _MILVUS["open"].append(backend)
    return backend


def _codes(kind: str, n: int, bits: int = BITS, seed: int = 1) -> np.ndarray:
    if kind == "uniform":
        return uniform_codes(n, bits, seed)
    return clustered_codes(n, bits, seed, n_clusters=30)


def _filled(
    config: tuple[str, dict[str, Any]], codes: np.ndarray, bits: int = BITS, seed: int = 0
) -> tuple[HammingBackend, np.ndarray]:
    """A backend holding ``codes`` under sparse shuffled ids, added in three batches
    whose id ranges interleave (so later adds insert below the current maximum)."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10 * len(codes), size=len(codes), replace=False).astype(np.int64)
    backend = _make(config, bits)
    for part in np.array_split(np.arange(len(codes)), 3):
        backend.add(ids[part], codes[part])
    return backend, ids


def _reference(ids: np.ndarray, codes: np.ndarray, queries: np.ndarray, k: int):
    """(distance, id) ranking recomputed with hamming_rank on rows sorted by id."""
    order = np.argsort(ids)
    rows, dists = hamming_rank(queries, codes[order], k)
    return ids[order][rows], dists


# ----------------------------------------------------------------- exact search


@pytest.mark.parametrize("bits", [BITS, 20])
@pytest.mark.parametrize("kind", ["uniform", "clustered"])
def test_numpy_reference_equals_hamming_rank(kind: str, bits: int) -> None:
    codes = _codes(kind, 400, bits)
    backend, ids = _filled(("numpy", {}), codes, bits)
    queries = np.concatenate([codes[:10], _codes(kind, 10, bits, seed=9)])
    for k in (1, 10, 400):
        found_ids, found_d = backend.search(queries, k)
        ref_ids, ref_d = _reference(ids, codes, queries, k)
        np.testing.assert_array_equal(found_ids, ref_ids)
        np.testing.assert_array_equal(found_d, ref_d)


@pytest.mark.parametrize("bits", [BITS, 20])
@pytest.mark.parametrize("kind", ["uniform", "clustered"])
@pytest.mark.parametrize("config", [*EXACT[1:], MILVUS_SMALL_LIMIT], ids=_label)
def test_exact_backend_equals_reference(config, kind: str, bits: int) -> None:
    codes = _codes(kind, 600, bits)
    backend, ids = _filled(config, codes, bits)
    reference, _ = _filled(("numpy", {}), codes, bits)
    queries = np.concatenate([codes[:20], _codes(kind, 20, bits, seed=9)])
    for k in (1, 3, 10, 100, 600, 650):
        found_ids, found_d = backend.search(queries, k)
        ref_ids, ref_d = reference.search(queries, k)
        np.testing.assert_array_equal(found_d, ref_d, err_msg=f"k={k}")
        np.testing.assert_array_equal(found_ids, ref_ids, err_msg=f"k={k}")
    assert found_ids.shape == (40, 650) and np.all(found_ids[:, 600:] == -1)
    assert np.all(found_d[:, 600:] == -1)


@pytest.mark.parametrize("bits", [BITS, 20, 72])
def test_distinct_ball_probe_answers_cluster_queries_and_falls_back_exactly(
    bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 72 bits: the hash table keys only the first 64, so a bucket mixes several codes.
    codes = clustered_codes(3000, bits, 4, n_clusters=6, duplicate_share=0.5)
    backend, ids = _filled(("distinct", {"probe_radius": 2, "probe_share": None}), codes, bits)
    scanned: list[int] = []
    scan = backend._scan
    monkeypatch.setattr(backend, "_scan", lambda q, k: (scanned.append(len(q)), scan(q, k))[1])
    uniq, counts = np.unique(codes, axis=0, return_counts=True)
    centres = uniq[counts >= 200]  # centres of big clusters: ≥ 200 exact copies
    assert len(centres) >= 2
    two_flips = centres.copy()
    two_flips[:, 0] ^= 0b1001_0000  # two bits away from a centre: found in the radius-2 shell
    near = np.concatenate([centres, two_flips])
    far = uniform_codes(10, bits, seed=5)
    for k in (1, 50, 200):
        scanned.clear()
        found_ids, found_d = backend.search(np.concatenate([near, far]), k)
        ref_ids, ref_d = _reference(ids, codes, np.concatenate([near, far]), k)
        np.testing.assert_array_equal(found_d, ref_d, err_msg=f"k={k}")
        np.testing.assert_array_equal(found_ids, ref_ids, err_msg=f"k={k}")
        # a big cluster's centre finds k items within 2 flips; random codes are far from all
        assert sum(scanned) == len(far), f"k={k}: scanned {scanned}"
    with pytest.raises(ValueError, match="probe_radius"):
        create_backend("distinct", bits, probe_radius=9)


def test_distinct_probes_only_radii_cheaper_than_the_scan() -> None:
    backend = create_backend("distinct", BITS)
    assert backend._probe_limit() == -1  # empty: nothing is worth a look-up
    backend.add(np.arange(3000), uniform_codes(3000, BITS, seed=3))
    assert backend._probe_limit() == 0  # 1 look-up ≤ 0.02·3000 < 65
    backend.add(np.arange(3000, 120_000), uniform_codes(117_000, BITS, seed=4))
    assert backend._probe_limit() == 2  # 1 + 64 + 2016 ≤ 0.02·120000 < 43,745 more
    backend.probe_radius = 1
    assert backend._probe_limit() == 1
    backend.probe_share, backend.probe_radius = None, 5
    assert backend._probe_limit() == 5


class _TieScramblingIndex:
    """A FAISS stand-in whose ``search`` has exact distances but random tie order and cut."""

    def __init__(self, index: Any, seed: int) -> None:
        self._index, self._rng = index, np.random.default_rng(seed)
        self.ntotal = index.ntotal
        self._codes = index.reconstruct_n(0, index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dists = hamming_distances(queries, self._codes)
        noise = self._rng.random(dists.shape)
        positions = np.lexsort((noise, dists), axis=-1)[:, :k]
        return np.take_along_axis(dists, positions, 1), positions

    def range_search(self, queries: np.ndarray, radius: int) -> Any:
        return self._index.range_search(queries, radius)


@pytest.mark.parametrize("kind", ["uniform", "clustered"])
def test_flat_rerank_corrects_arbitrary_faiss_tie_order(kind: str) -> None:
    codes = _codes(kind, 600, bits=16)  # 16 bits: every distance is shared by many items
    backend, ids = _filled(("flat", {"tie_check": "rerank"}), codes, bits=16)
    backend._index = _TieScramblingIndex(backend._index, seed=3)  # type: ignore[attr-defined]
    queries = _codes(kind, 30, bits=16, seed=9)
    for k in (1, 5, 40):
        ref_ids, ref_d = _reference(ids, codes, queries, k)
        found_ids, found_d = backend.search(queries, k)
        np.testing.assert_array_equal(found_d, ref_d)
        np.testing.assert_array_equal(found_ids, ref_ids)


@pytest.mark.parametrize("config", EXACT, ids=_label)
def test_database_item_query_finds_lowest_id_duplicate_first(config) -> None:
    codes = _codes("clustered", 500)
    backend, ids = _filled(config, codes)
    found_ids, found_d = backend.search(codes[:50], 5)
    assert np.all(found_d[:, 0] == 0)
    for i in range(50):
        same = ids[np.all(codes == codes[i], axis=1)]
        expected = np.sort(same)[:5]
        np.testing.assert_array_equal(found_ids[i, : len(expected)], expected)


@pytest.mark.parametrize("config", ALL, ids=_label)
def test_fewer_items_than_k_are_padded(config) -> None:
    codes = _codes("uniform", 5)
    backend = _make(config)
    backend.add(np.array([40, 10, 30, 20, 50]), codes)
    found_ids, found_d = backend.search(codes[1], 8)
    assert found_ids.shape == found_d.shape == (1, 8)
    assert found_ids.dtype == np.int64 and found_d.dtype == np.int32
    assert found_ids[0, 0] == 10 and found_d[0, 0] == 0
    assert np.all(found_ids[0, 5:] == -1) and np.all(found_d[0, 5:] == -1)
    empty = _make(config)
    ids, dists = empty.search(codes, 3)
    assert ids.shape == (5, 3) and np.all(ids == -1) and np.all(dists == -1)


# ----------------------------------------------------------------- approximate search


@pytest.mark.parametrize("config", APPROXIMATE, ids=_label)
def test_approximate_recall_and_order(config) -> None:
    codes = clustered_codes(2000, BITS, 1, n_clusters=50)
    backend, ids = _filled(config, codes)
    reference, _ = _filled(("numpy", {}), codes)
    queries = np.concatenate([codes[:30], clustered_codes(30, BITS, 2, n_clusters=50)])
    found_ids, found_d = backend.search(queries, 10)
    _, exact_d = reference.search(queries, 10)
    assert tie_aware_recall(found_d, exact_d, 10) >= 0.9
    code_of = dict(zip(ids.tolist(), codes, strict=True))
    for q, row_ids, row_d in zip(queries, found_ids, found_d, strict=True):
        real = row_ids >= 0
        assert np.all(real[:-1] >= real[1:]), "padding must come last"
        ids_r, d_r = row_ids[real], row_d[real]
        assert len(set(ids_r.tolist())) == len(ids_r)
        true_d = hamming_distances(q, np.stack([code_of[i] for i in ids_r]))[0]
        np.testing.assert_array_equal(d_r, true_d)
        np.testing.assert_array_equal(np.lexsort((ids_r, d_r)), np.arange(len(ids_r)))


# ----------------------------------------------------------------- add / remove


@pytest.mark.parametrize("config", ALL, ids=_label)
def test_remove_then_search(config) -> None:
    codes = _codes("clustered", 600)
    backend, ids = _filled(config, codes)
    # All items of one duplicated code plus a random sample.
    dup = np.all(codes == codes[0], axis=1)
    gone = np.unique(np.concatenate([ids[dup], ids[3:200:3]]))
    assert backend.remove(gone[::-1].copy()) == len(gone)
    assert len(backend) == 600 - len(gone)
    assert not backend.contains(gone).any() and backend.contains(np.setdiff1d(ids, gone)).all()
    found_ids, _ = backend.search(codes[:40], 50)
    assert not np.isin(found_ids, gone).any()
    kept = ~np.isin(ids, gone)
    if config in EXACT:
        ref_ids, ref_d = _reference(ids[kept], codes[kept], codes[:40], 50)
        np.testing.assert_array_equal(backend.search(codes[:40], 50)[1], ref_d)
        np.testing.assert_array_equal(found_ids, ref_ids)
    back = np.isin(ids, gone[:5])
    backend.add(ids[back], codes[back])  # ids can come back after removal
    assert backend.contains(gone[:5]).all() and len(backend) == 605 - len(gone)


@pytest.mark.parametrize("config", ALL, ids=_label)
def test_id_errors_name_the_ids_and_change_nothing(config) -> None:
    codes = _codes("uniform", 30)
    backend = _make(config)
    backend.add(np.arange(100, 130), codes)
    with pytest.raises(UnknownIdError, match="7777"):
        backend.remove(np.array([101, 7777]))
    with pytest.raises(DuplicateIdError, match="in ids: 5"):
        backend.add(np.array([5, 5]), codes[:2])
    with pytest.raises(DuplicateIdError, match="already in .*: 129"):
        backend.add(np.array([500, 129]), codes[:2])
    assert len(backend) == 30 and backend.contains(np.array([101])).all()
    with pytest.raises(ValueError, match="ids has 2 entries but codes has 3 rows"):
        backend.add(np.array([1, 2]), codes[:3])
    with pytest.raises(ValueError, match="int64"):
        backend.add(np.array([1.0, 2.0]), codes[:2])
    with pytest.raises(ValueError, match="1-D"):
        backend.add(np.array([[1, 2]]), codes[:2])
    with pytest.raises(ValueError, match="non-negative"):
        backend.add(np.array([-1, 2]), codes[:2])


@pytest.mark.parametrize("config", ALL, ids=_label)
def test_code_and_k_errors(config) -> None:
    backend = _make(config)
    codes = _codes("uniform", 20)
    backend.add(np.arange(20), codes)
    with pytest.raises(ValueError, match="rows have 4 bytes; 64-bit codes pack into 8"):
        backend.add(np.arange(20, 22), codes[:2, :4])
    with pytest.raises(ValueError, match="dtype int64"):
        backend.search(codes.astype(np.int64), 3)
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be an integer >= 1"):
            backend.search(codes, bad_k)  # type: ignore[arg-type]
    twenty = _make(config, bits=20)
    with pytest.raises(ValueError, match="padding bits"):
        twenty.search(np.full((1, 3), 255, np.uint8), 1)


# ----------------------------------------------------------------- persistence


@pytest.mark.parametrize("config", ALL, ids=_label)
def test_save_load_round_trip(config, tmp_path: Path) -> None:
    codes = _codes("clustered", 500)
    backend, ids = _filled(config, codes)
    backend.remove(ids[:7])
    path = tmp_path / "backend.npz"
    backend.save(path)
    assert not list(tmp_path.glob("*.tmp"))
    loaded = load_backend(path)
    assert type(loaded) is type(backend) and loaded.params == backend.params
    np.testing.assert_array_equal(loaded.ids, backend.ids)
    queries = np.concatenate([codes[:20], _codes("clustered", 20, seed=5)])
    for got, want in zip(loaded.search(queries, 15), backend.search(queries, 15), strict=True):
        np.testing.assert_array_equal(got, want)
    loaded.add(np.array([10**9]), codes[:1])  # a loaded backend keeps working
    assert len(loaded) == len(backend) + 1
    if config in EXACT:
        twins = ids[7:][np.all(codes[7:] == codes[0], axis=1)]
        assert loaded.search(codes[0], 1)[0][0, 0] == min([10**9, *twins.tolist()])


@pytest.mark.parametrize("config", ALL, ids=_label)
def test_corrupt_files_raise_index_file_error(config, tmp_path: Path) -> None:
    backend, _ = _filled(config, _codes("uniform", 200))
    path = tmp_path / "backend.npz"
    backend.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match="truncated.npz"):
        type(backend).load(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a backend file" * 10)
    with pytest.raises(IndexFileError, match="garbage.npz"):
        load_backend(garbage)
    other = "numpy" if config[0] != "numpy" else "flat"
    with pytest.raises(IndexFileError, match=f"holds a '{config[0]}' backend, not '{other}'"):
        BACKENDS.get(other).load(path)
    with pytest.raises(FileNotFoundError):
        load_backend(tmp_path / "missing.npz")


def test_load_may_change_search_parameters_only(tmp_path: Path) -> None:
    backend, _ = _filled(APPROXIMATE[0], _codes("clustered", 300))
    backend.save(tmp_path / "h.npz")
    loaded = load_backend(tmp_path / "h.npz", ef_search=16)
    assert loaded.params["ef_search"] == 16
    with pytest.raises(ValueError, match="built with m=32"):
        load_backend(tmp_path / "h.npz", m=8)


def test_ivf_first_add_must_cover_nlist() -> None:
    backend = create_backend("ivf", BITS, nlist=16)
    with pytest.raises(ValueError, match="at least nlist=16"):
        backend.add(np.arange(10), _codes("uniform", 10))
    assert len(backend) == 0


def test_the_suites_exact_and_approximate_configs_follow_the_classes() -> None:
    """A backend is held to the numpy reference exactly when its class says it is exact."""
    assert {name for name, _ in EXACT} == set(backend_names(exact=True))
    assert {name for name, _ in APPROXIMATE} == set(backend_names(exact=False))


def test_registry_lists_every_backend() -> None:
    assert BACKENDS.names() == ["distinct", "flat", "hnsw", "ivf", "milvus", "multihash", "numpy"]
    with pytest.raises(KeyError, match="known: distinct"):
        create_backend("annoy", BITS)


# ----------------------------------------------------------------- milvus


@pytest.mark.parametrize("config", [("milvus", {"max_limit": 16, "slack": 0})], ids=_label)
def test_milvus_completes_tie_groups_beyond_the_search_limit(config, monkeypatch) -> None:
    codes = _codes("uniform", 300)
    codes[:200] = codes[0]  # one tie group of 200, far beyond max_limit=16
    backend, ids = _filled(config, codes)
    walks: list[bool] = []
    walk = MilvusBackend._walk

    def spy(self: MilvusBackend, queries: np.ndarray, k: int, band: int | None, *rest):
        walks.append(band is not None)
        return walk(self, queries, k, band, *rest)

    monkeypatch.setattr(MilvusBackend, "_walk", spy)
    near = codes[:2].copy()
    near[:, 0] ^= 1  # one bit away from the group
    queries = np.concatenate([codes[:2], near, codes[250:256]])
    for k in (1, 5, 16, 40):
        found_ids, found_d = backend.search(queries, k)
        ref_ids, ref_d = _reference(ids, codes, queries, k)
        np.testing.assert_array_equal(found_d, ref_d, err_msg=f"k={k}")
        np.testing.assert_array_equal(found_ids, ref_ids, err_msg=f"k={k}")
    assert True in walks and False in walks  # the boundary walk and the k > max_limit scan ran


@pytest.mark.parametrize("config", [("milvus", {})], ids=_label)
def test_milvus_rejects_ids_another_writer_added(config) -> None:
    codes = _codes("uniform", 10)
    first = _make(config)
    where = {"uri": first.uri, "collection": first.collection}  # type: ignore[attr-defined]
    second = MilvusBackend(BITS, **where)  # opened while the collection is empty
    _MILVUS["open"].append(second)
    first.add(np.arange(10), codes)
    with pytest.raises(DuplicateIdError, match=r"already in the Milvus collection 't\d+': 5, 9"):
        second.add(np.array([100, 9, 5]), codes[:3])
    third = MilvusBackend(BITS, **where)  # adopts what is stored: the rejected add left nothing
    _MILVUS["open"].append(third)
    np.testing.assert_array_equal(third.ids, np.arange(10))
    found_ids, found_d = third.search(codes[7], 2)
    assert found_ids[0, 0] == 7 and found_d[0, 0] == 0 and found_d[0, 1] > 0


@pytest.mark.parametrize("config", [("milvus", {})], ids=_label)
def test_milvus_load_checks_the_collection(config, tmp_path: Path) -> None:
    backend, ids = _filled(config, _codes("clustered", 100))
    assert isinstance(backend, MilvusBackend)
    path = tmp_path / "pointer.npz"
    backend.save(path)
    with pytest.raises(CollectionMismatchError, match="20-bit cxrhash codes \\(bits=64"):
        MilvusBackend(20, uri=backend.uri, collection=backend.collection)
    backend.remove(ids[:3])  # the collection no longer matches the saved count
    with pytest.raises(IndexFileError, match="header records 100 codes but the data holds 97"):
        load_backend(path)
    backend.drop()
    for _ in range(2):  # a failed load must not create the collection
        with pytest.raises(IndexFileError, match="pointer.npz: no collection 't\\d+'"):
            load_backend(path)


def test_milvus_uri_forms(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalise_uri("codes.db") == str(tmp_path.resolve() / "codes.db")
    assert normalise_uri("http://milvus:19530") == "http://milvus:19530"
    with pytest.raises(ValueError, match="ending in .db or a server address"):
        MilvusBackend(BITS, uri="codes.sqlite")


# ----------------------------------------------------------------- recall


def test_tie_aware_recall_counts_boundary_ties() -> None:
    exact = np.array([[0, 1, 2, 2]])
    # Other items at the boundary distance 2 are hits; distance 3 is not.
    assert tie_aware_recall(np.array([[0, 2, 2, 2]]), exact, 4) == 1.0
    assert tie_aware_recall(np.array([[0, 1, 2, 3]]), exact, 4) == 0.75
    assert tie_aware_recall(np.array([[0, 1, -1, -1]]), exact, 4) == 0.5
    assert (
        tie_aware_recall(np.array([[0, 1, 2, 2], [5, 5, 5, 5]]), np.array([[0, 1, 2, 2]] * 2), 4)
        == 0.5
    )
    # Only the first k columns count.
    assert tie_aware_recall(np.array([[0, 9, 1]]), np.array([[0, 1, 1]]), 2) == 0.5
    # Fewer than k real items: the denominator is their number.
    assert tie_aware_recall(np.array([[1, 3, -1]]), np.array([[1, 3, -1]]), 3) == 1.0


def test_id_recall_differs_from_tie_aware_recall_on_ties() -> None:
    exact_ids, exact_d = np.array([[4, 7, 9]]), np.array([[0, 2, 2]])
    found_ids, found_d = np.array([[4, 7, 12]]), np.array([[0, 2, 2]])
    assert id_recall(found_ids, exact_ids, 3) == pytest.approx(2 / 3)
    assert tie_aware_recall(found_d, exact_d, 3) == 1.0
    with pytest.raises(ValueError, match="k=4"):
        id_recall(found_ids, exact_ids, 4)


# ----------------------------------------------------------------- synthetic codes


def test_synthetic_codes_shape_padding_and_duplicates() -> None:
    uniform = uniform_codes(1000, 20, seed=3)
    assert uniform.shape == (1000, 3) and uniform.dtype == np.uint8
    assert not np.any(uniform[:, -1] & 0x0F)
    np.testing.assert_array_equal(uniform, uniform_codes(1000, 20, seed=3))
    bits = np.unpackbits(uniform, axis=1, count=20)
    assert abs(bits.mean() - 0.5) < 0.02

    n = 5000
    codes = clustered_codes(n, BITS, seed=0, no_finding_share=0.4, duplicate_share=0.3)
    _, counts = np.unique(codes, axis=0, return_counts=True)
    # The No Finding centre alone: 0.4 × (0.3 + 0.7 × 0.98^64) ≈ 0.20 of the items.
    assert 0.15 < counts.max() / n < 0.25
    assert len(counts) < 0.7 * n
    flat = clustered_codes(n, BITS, seed=0, duplicate_share=0.0, flip_prob=0.5)
    assert len(np.unique(flat, axis=0)) > 0.99 * n
