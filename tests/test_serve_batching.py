"""Micro-batching of the server's searches (serve/searcher.py): concurrent searches are encoded
together and each caller gets what a search of its film alone finds.

The worker thread is held on a job of the test's own (an event) while searches queue up, so a
batch is formed deterministically, not by the luck of thread timing. Batched and single
forward passes use different CPU kernels, so probabilities and heat-maps are compared to
float32 round-off (1e-6); hits (ids, distances, order) must be identical.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch import Tensor, nn

from cxrhash.config import make_config
from cxrhash.data.images import load_resized
from cxrhash.data.readers import open_dataset
from cxrhash.retrieve import DecodedSearch, build_index, search_decoded
from cxrhash.serve import create_app
from cxrhash.serve.searcher import Searcher, SearcherClosed
from cxrhash.training.trainer import train

POISON = 7.0  # a film of this value makes the spy model fail


@pytest.fixture(scope="module")
def index_dir(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("batching") / "run"
    train(make_config("test", data=f"phantom:{phantom_dir}", epochs=1), run, progress=False)
    out = run.parent / "idx"
    build_index(run / "best.pt", open_dataset(f"phantom:{phantom_dir}", 32), out, progress=False)
    return out


@pytest.fixture(scope="module")
def films(phantom_dir: Path) -> list[np.ndarray]:
    return [load_resized(p, 32) for p in sorted((phantom_dir / "images").glob("*.png"))[:12]]


@pytest.fixture
def searcher(index_dir: Path) -> Iterator[Searcher]:
    s = Searcher(index_dir)
    yield s
    s.close()


class Spy(nn.Module):
    """The served model, recording each forward's batch size in ``log``; a batch holding a
    poison film raises."""

    def __init__(self, inner: nn.Module, log: list[object]) -> None:
        super().__init__()
        self.inner = inner
        self.log = log

    def forward(self, x: Tensor) -> object:
        self.log.append(x.shape[0])
        if (x == POISON).flatten(1).all(1).any():
            raise ValueError("poisoned film")
        return self.inner(x)


def hold(searcher: Searcher) -> tuple[threading.Event, threading.Thread]:
    """Hold the worker thread on a job until the returned event is set (and the thread that
    sent the job is joined)."""
    running, release = threading.Event(), threading.Event()

    def block() -> None:
        running.set()
        release.wait()

    blocker = threading.Thread(target=searcher._run, args=(block,))
    blocker.start()
    assert running.wait(30)
    return release, blocker


def queued(searcher: Searcher, n: int) -> None:
    """Wait until ``n`` jobs wait in the searcher's queue."""
    deadline = time.monotonic() + 30
    while len(searcher._jobs) < n and time.monotonic() < deadline:
        time.sleep(0.002)
    assert len(searcher._jobs) == n


def held(searcher: Searcher, jobs: Callable[[ThreadPoolExecutor], list[Future]]) -> list[Future]:
    """Hold the worker, send ``jobs`` from other threads, wait until they are all queued,
    then release the worker; the jobs' futures."""
    release, blocker = hold(searcher)
    with ThreadPoolExecutor(16) as pool:
        futures = jobs(pool)
        queued(searcher, len(futures))
        release.set()
        blocker.join()
    return futures


def assert_same(got: DecodedSearch, alone: DecodedSearch) -> None:
    """``got`` is what the search alone found, to float round-off."""
    strip = [[(h.rank, h.case_id, h.distance, h.findings) for h in q] for q in alone.hits]
    assert [[(h.rank, h.case_id, h.distance, h.findings) for h in q] for q in got.hits] == strip
    for g, a in zip(got.hits[0], alone.hits[0], strict=True):
        assert (g.score is None) == (a.score is None)
        assert g.score is None or g.score == pytest.approx(a.score, abs=1e-5)
    assert got.probabilities.shape == alone.probabilities.shape == (1, alone.probabilities.shape[1])
    np.testing.assert_allclose(got.probabilities, alone.probabilities, atol=1e-6)
    assert (got.maps is None) == (alone.maps is None)
    if got.maps is not None and alone.maps is not None:
        assert got.maps.shape[0] == 1
        torch.testing.assert_close(got.maps, alone.maps, atol=1e-6, rtol=1e-5)


def test_take_slices_every_per_query_field(searcher: Searcher, films: list[np.ndarray]) -> None:
    """``DecodedSearch.take`` cuts each list, array or tensor field to one query, a field a
    subclass adds too, and keeps the batch's timings."""

    @dataclass
    class WithExtra(DecodedSearch):
        extra: np.ndarray | None = None

    found = searcher._run(search_decoded, searcher.model, searcher.index, films[:3], k=6)
    extra = WithExtra(**vars(found), extra=np.array([0.1, 0.2, 0.3]))
    one = extra.take(1, 4)
    assert isinstance(one, WithExtra)
    assert one.hits == [found.hits[1][:4]] and len(one.hits[0]) == 4
    np.testing.assert_array_equal(one.probabilities, found.probabilities[1:2])
    assert one.maps is None or torch.equal(one.maps, found.maps[1:2])  # type: ignore[index]
    np.testing.assert_array_equal(one.extra, [0.2])  # type: ignore[arg-type]
    assert one.closeness == found.closeness[1:2]  # the real per-query field too
    assert (one.encode_seconds, one.search_seconds) == (found.encode_seconds, found.search_seconds)
    assert found.take(2).hits == [found.hits[2]]  # no k: every hit


def test_concurrent_searches_are_batched_and_equal_single_ones(
    searcher: Searcher, films: list[np.ndarray]
) -> None:
    reranks = ["none"] * 6 + ["asymmetric"] * 6
    asks = list(zip(films, (1, 3, 5, 10, 13, 2) * 2, reranks, strict=True))
    alone = [searcher.search(f, k, r) for f, k, r in asks]
    assert searcher.batch_sizes == {1: len(asks)}
    searcher.batch_sizes.clear()
    futures = held(searcher, lambda pool: [pool.submit(searcher.search, *a) for a in asks])
    for future, single, (_, k, _) in zip(futures, alone, asks, strict=True):
        got = future.result()
        assert len(got.hits[0]) == k
        assert_same(got, single)
    # one batch of the 6 Hamming searches; the re-ranked ones by shortlist length (100 up to
    # k = 10, 130 for k = 13)
    assert searcher.batch_sizes == {6: 1, 5: 1, 1: 1}


def test_a_batch_never_overtakes_a_non_search_job(
    searcher: Searcher, films: list[np.ndarray]
) -> None:
    log: list[object] = []
    searcher.model = Spy(searcher.model, log)

    def jobs(pool: ThreadPoolExecutor) -> list[Future]:
        futures = []
        for job in ("search", "search", "call", "search", "search", "search"):
            if job == "search":
                futures.append(pool.submit(searcher.search, films[len(futures)], 3, "none"))
            else:
                futures.append(pool.submit(searcher._run, log.append, "call"))
            queued(searcher, len(futures))  # keep the order of submission
        return futures

    held(searcher, jobs)
    assert log == [2, "call", 3]


def test_one_failing_search_does_not_fail_its_batch(
    searcher: Searcher, films: list[np.ndarray]
) -> None:
    alone = [searcher.search(f, 4, "none") for f in films[:4]]
    log: list[object] = []
    searcher.model = Spy(searcher.model, log)
    poison = np.full_like(films[0], POISON)
    asks = [films[0], films[1], poison, films[2], films[3]]
    futures = held(
        searcher, lambda pool: [pool.submit(searcher.search, f, 4, "none") for f in asks]
    )
    with pytest.raises(ValueError, match="poisoned film"):
        futures[2].result()
    good = [f.result() for i, f in enumerate(futures) if i != 2]
    for got, single in zip(good, alone, strict=True):
        assert_same(got, single)
    assert log == [5, 1, 1, 1, 1, 1]  # the batch failed, then each film on its own


def test_max_batch_and_the_batch_window(index_dir: Path, films: list[np.ndarray]) -> None:
    searcher = Searcher(index_dir, max_batch=2, batch_window=5.0)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(searcher.search, films[0], 2, "none")
            time.sleep(0.2)  # the worker holds the first search, waiting for a second
            second = pool.submit(searcher.search, films[1], 2, "none")
            assert len(first.result(timeout=4).hits[0]) == len(second.result().hits[0]) == 2
        assert searcher.batch_sizes == {2: 1}  # a full batch does not wait out the window
        searcher.batch_window = 0.0
        held(searcher, lambda pool: [pool.submit(searcher.search, f, 2, "none") for f in films[:5]])
        assert searcher.batch_sizes == {2: 3, 1: 1}
    finally:
        searcher.close()
    with pytest.raises(ValueError, match="max_batch"):
        Searcher(index_dir, max_batch=0)


def test_close_answers_the_waiting_jobs_and_refuses_new_ones(
    index_dir: Path, films: list[np.ndarray]
) -> None:
    searcher = Searcher(index_dir)
    release, blocker = hold(searcher)
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(searcher.search, f, 2, "none") for f in films[:3]]
        waiting.append(pool.submit(searcher.stats))
        queued(searcher, len(waiting))
        closer = threading.Thread(target=searcher.close)
        closer.start()
        time.sleep(0.05)
        release.set()
        closer.join(timeout=30)
        assert not closer.is_alive()
        blocker.join()
    assert [len(f.result().hits[0]) for f in waiting[:3]] == [2, 2, 2]
    assert waiting[3].result()["size"] == 120
    with pytest.raises(SearcherClosed):
        searcher.search(films[0], 2, "none")
    searcher.close()  # a second close is a no-op


def test_the_api_batches_concurrent_uploads(index_dir: Path, phantom_dir: Path) -> None:
    client = TestClient(create_app(index_dir))
    searcher: Searcher = client.app.state.searcher  # type: ignore[attr-defined]
    uploads = [p.read_bytes() for p in sorted((phantom_dir / "images").glob("*.png"))[:8]]

    def post(data: bytes) -> dict:
        res = client.post("/api/search", files={"image": ("f.png", data)}, params={"k": 5})
        assert res.status_code == 200, res.text
        body = res.json()
        del body["timings"]
        return body

    alone = [post(d) for d in uploads]
    assert searcher.batch_sizes == {1: 8}
    release, blocker = hold(searcher)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, d) for d in uploads]
        queued(searcher, len(uploads))
        release.set()
        together = [f.result() for f in futures]
    blocker.join()
    assert sum(searcher.batch_sizes.values()) == 9
    assert searcher.batch_sizes[8] == 1
    for got, single in zip(together, alone, strict=True):
        assert got["hits"] == single["hits"]
        assert got["predicted"] == pytest.approx(single["predicted"], abs=1e-6)
    searcher.close()
