"""The model and the index a server answers from, loaded once and used by one thread.

FastAPI runs the routes in a thread pool. The model (torch is not promised to be
re-entrant) and the open index (its SQLite connection belongs to the thread that opened
it) are used only by one worker thread of their own, so every inference and index read
is serialised there; decoding an upload happens in the route's own thread, in parallel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cxrhash.index.meta import RowMeta
from cxrhash.index.store import HashIndex
from cxrhash.retrieve import DecodedSearch, resolve_checkpoint, search_decoded
from cxrhash.training.checkpoint import load_model

LOG = logging.getLogger(__name__)
T = TypeVar("T")


class Searcher:
    """A trained model and its open index (read side only: no pseudonym key is needed)."""

    def __init__(self, index_dir: Path, checkpoint: Path | None = None) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxrhash-search")
        try:
            ckpt = resolve_checkpoint(index_dir, checkpoint)
            self.model, payload = self._run(load_model, ckpt)
            self.model_id: str = payload["model_id"]
            self.image_size: int = int(payload["config"]["image_size"])
            self.label_names: list[str] = list(payload["label_names"])
            self.index = self._run(HashIndex.open, index_dir, model_id=self.model_id)
        except BaseException:
            self._worker.shutdown()
            raise
        LOG.info("serving %d films of model %s", len(self.index), self.model_id)

    def _run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)`` on the worker thread, waited for."""
        return self._worker.submit(func, *args, **kwargs).result()

    def search(self, image: np.ndarray, k: int, rerank: str) -> DecodedSearch:
        """Search the index with one decoded ``image_size``² film."""
        return self._run(
            search_decoded, self.model, self.index, [image], k=k, rerank=rerank, heatmap="attention"
        )

    def case(self, stored_id: str) -> RowMeta | None:
        """The metadata stored under ``stored_id``, or ``None``."""
        return self._run(self.index.case, stored_id)

    def stored_ids(self, case_ids: list[str]) -> list[str]:
        """What the index stores for source case ids (keyed pseudonyms: needs the key)."""
        return self._run(lambda: [self.index.stored_case_id(c) for c in case_ids])

    def stats(self) -> dict[str, Any]:
        """What the index and the model are."""

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
        }

    def close(self) -> None:
        """Close the index and stop the worker thread."""
        self._run(self.index.close)
        self._worker.shutdown()
