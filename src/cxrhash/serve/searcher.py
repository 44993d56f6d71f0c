"""The model and the index a server answers from, loaded once and used by one thread, which
encodes concurrent searches together (dynamic micro-batching).

FastAPI runs the routes in a thread pool. The model (torch is not promised to be
re-entrant) and the open index (its SQLite connection belongs to the thread that opened
it) are used only by one worker thread of their own; decoding an upload happens in the
route's own thread, in parallel. The worker takes jobs in arrival order; when the next job
is a search it also takes every search queued right behind it (up to ``max_batch``) and
runs them as one batch through the model and the index, so that under load one forward
pass serves many requests, as model servers do. A non-search job (a case look-up, the
stats, a change to the index) is never overtaken: a batch only gathers the searches queued
before the next such job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cxrhash.index.backends import BACKENDS
from cxrhash.index.meta import RowMeta
from cxrhash.index.rerank import default_shortlist
from cxrhash.index.store import HashIndex
from cxrhash.inference import Encoder, EngineSpec, as_engine
from cxrhash.retrieve import DecodedSearch, resolve_checkpoint, search_decoded
from cxrhash.training.checkpoint import load_model

LOG = logging.getLogger(__name__)
T = TypeVar("T")
#: Most searches encoded in one forward pass.
MAX_BATCH = 16


class SearcherClosed(RuntimeError):
    """A job was sent to a searcher after :meth:`Searcher.close`."""


@dataclass
class _Call:
    """A non-search job: ``func(*args, **kwargs)`` on the worker thread."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: Future[Any] = field(default_factory=Future)


@dataclass
class _Search:
    """One query film waiting to be searched with its own ``k`` and re-rank."""

    image: np.ndarray
    k: int
    rerank: str
    future: Future[DecodedSearch] = field(default_factory=Future)


class Searcher:
    """A trained model and its open index (read side only: no pseudonym key is needed).

    ``max_batch``: most searches encoded together; ``batch_window``: seconds the worker
    waits for more searches when it has fewer than ``max_batch`` (0: take only those
    already waiting). ``batch_sizes`` counts the batches run by their size. ``engine``:
    PyTorch (default) or ONNX Runtime (:class:`~cxrhash.inference.EngineSpec`).
    """

    def __init__(
        self,
        index_dir: Path,
        checkpoint: Path | None = None,
        *,
        max_batch: int = MAX_BATCH,
        batch_window: float = 0.0,
        engine: EngineSpec | None = None,
    ) -> None:
        if max_batch < 1 or batch_window < 0:
            raise ValueError(
                f"need max_batch ≥ 1 and batch_window ≥ 0, got {max_batch}, {batch_window}"
            )
        self.max_batch = max_batch
        self.batch_window = batch_window
        self.batch_sizes: Counter[int] = Counter()
        self._jobs: deque[_Call | _Search] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="cxrhash-search", daemon=True)
        self._worker.start()
        try:
            ckpt = resolve_checkpoint(index_dir, checkpoint)
            model, payload = self._run(load_model, ckpt)
            self.model: Encoder = self._run((engine or EngineSpec()).open, model, payload)
            # what encodes, as GET /api/stats tells it (Engine.describe: no paths)
            self.engine_info: dict[str, Any] = as_engine(self.model).describe()
            self.engine: str = self.engine_info["name"]
            self.model_id: str = payload["model_id"]
            self.image_size: int = int(payload["config"]["image_size"])
            self.label_names: list[str] = list(payload["label_names"])
            self.index = self._run(HashIndex.open, index_dir, model_id=self.model_id)
            # Build the search backends (or reach a Milvus server) now, not at the first search.
            self._run(self.index.sync_backends)
        except BaseException:
            self._stop()
            raise
        self._exact = BACKENDS.get(self.index.backend).exact
        LOG.info("serving %d films of model %s", len(self.index), self.model_id)

    def _submit(self, job: _Call | _Search) -> None:
        with self._ready:
            if self._closed:
                raise SearcherClosed("the searcher is closed")
            self._jobs.append(job)
            self._ready.notify()

    def _run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)`` on the worker thread, in turn with other jobs; waited for."""
        job = _Call(func, args, kwargs)
        self._submit(job)
        return job.future.result()

    def search(self, image: np.ndarray, k: int, rerank: str) -> DecodedSearch:
        """Search the index with one decoded ``image_size``² film: exactly what a search of it
        alone finds, though it may be encoded in one batch with concurrent searches."""
        job = _Search(image, k, rerank)
        self._submit(job)
        return job.future.result()

    def case(self, stored_id: str) -> RowMeta | None:
        """The metadata stored under ``stored_id``, or ``None``."""
        return self._run(self.index.case, stored_id)

    def stored_ids(self, case_ids: list[str]) -> list[str]:
        """What the index stores for source case ids (keyed pseudonyms: needs the key)."""
        return self._run(lambda: [self.index.stored_case_id(c) for c in case_ids])

    def stats(self) -> dict[str, Any]:
        """What the index, the model and the engine are."""

        def read() -> dict[str, Any]:
            return {
                "size": len(self.index),
                "bits": self.index.bits,
                "backend": self.index.backend,
                "shards": self.index.n_shards,
                "stores_floats": self.index.stores_floats,
                "keeps_source_names": self.index.keeps_source_names,
            }

        return {
            **self._run(read),
            "model_id": self.model_id,
            "image_size": self.image_size,
            "label_names": self.label_names,
            "engine": self.engine_info,
        }

    def close(self) -> None:
        """Answer the jobs already queued, close the index and stop the worker thread; jobs
        sent after this raise :class:`SearcherClosed`."""
        job = _Call(lambda: self.index.close(), (), {})  # the index open then (it may be swapped)
        with self._ready:
            if self._closed:
                return
            self._jobs.append(job)
        self._stop()
        job.future.result()

    def _stop(self) -> None:
        """Refuse new jobs, let the worker finish the queued ones, and wait for it."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._worker.join()

    # ---------------------------------------------------------------- the worker thread

    def _work(self) -> None:
        """The worker's loop: the next job, or the next batch of searches, until closed."""
        while (jobs := self._next_jobs()) is not None:
            if isinstance(jobs, _Call):
                _settle(jobs.future, jobs.func, *jobs.args, **jobs.kwargs)
            else:
                self._search_batch(jobs)

    def _next_jobs(self) -> _Call | list[_Search] | None:
        """The next job, or the searches at the head of the queue (at most ``max_batch``);
        ``None`` once closed with nothing left."""
        with self._ready:
            while not self._jobs:
                if self._closed:
                    return None
                self._ready.wait()
            first = self._jobs.popleft()
            if isinstance(first, _Call):
                return first
            batch = [first]
            deadline = time.monotonic() + self.batch_window
            while len(batch) < self.max_batch:
                if self._jobs:
                    if not isinstance(self._jobs[0], _Search):
                        break
                    batch.append(self._jobs.popleft())  # type: ignore[arg-type]
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._ready.wait(left)
            return batch

    def _group_key(self, job: _Search) -> tuple[str, int | None]:
        """Searches of one key are answered by one search with the group's largest k, cut
        per query: a Hamming top-k of an exact backend is the head of any larger top-k, and
        a re-rank orders the same shortlist when its length (which grows with k) is equal."""
        if not self._exact:
            return job.rerank, job.k  # an approximate backend's top-k may depend on k
        return job.rerank, None if job.rerank == "none" else default_shortlist(job.k)

    def _search_batch(self, batch: list[_Search]) -> None:
        """Search each group of ``batch`` in one call, and hand every query its own part."""
        groups: dict[tuple[str, int | None], list[_Search]] = {}
        for job in batch:
            groups.setdefault(self._group_key(job), []).append(job)
        for (rerank, _), jobs in groups.items():
            k = max(job.k for job in jobs)
            images = [job.image for job in jobs]
            try:
                found = self._search(images, k, rerank)
            except Exception as err:
                if len(jobs) == 1:
                    jobs[0].future.set_exception(err)
                    continue
                # one bad query must not fail the others: answer each on its own
                for job in jobs:
                    _settle(job.future, self._search_one, job)
                continue
            for i, job in enumerate(jobs):
                _settle(job.future, found.take, i, job.k)

    def _search(self, images: list[np.ndarray], k: int, rerank: str) -> DecodedSearch:
        """One search of ``images`` through the model and the index, counted by batch size."""
        found = search_decoded(
            self.model, self.index, images, k=k, rerank=rerank, heatmap="attention"
        )
        self.batch_sizes[len(images)] += 1
        return found

    def _search_one(self, job: _Search) -> DecodedSearch:
        return self._search([job.image], job.k, job.rerank).take(0)


def _settle(future: Future[T], func: Callable[..., T], *args: Any, **kwargs: Any) -> None:
    """Run ``func`` and put its result, or the exception it raised, in ``future``."""
    try:
        result = func(*args, **kwargs)
    except BaseException as err:  # handed to the waiting caller, who re-raises it
        future.set_exception(err)
    else:
        future.set_result(result)
