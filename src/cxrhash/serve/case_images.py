"""The film behind a case id, as a PNG thumbnail for the viewer (``GET /api/cases/{id}/image``).

An index stores codes and findings, not films. The server finds a case's film either by
the source path an index made with ``--keep-source-names`` stores, or, for a pseudonymous
index, through ``cxrhash serve --images SPEC``: the dataset the index was made from, whose
case ids the server pseudonymises with the key (as ``cxrhash index`` did) to map each
stored id back to its file. Without either, cases have no image and answers say so.
Thumbnails are re-encoded from the decoded film (never the file's own bytes) and cached.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from PIL import Image

from cxrhash.data.images import load_image
from cxrhash.index.pacs_links import is_link

LOG = logging.getLogger(__name__)
#: The thumbnail's longest side in pixels.
THUMBNAIL_SIDE = 512
CACHE_ENTRIES = 256


class CaseImages:
    """Case id → film → cached PNG thumbnail."""

    def __init__(self, paths: dict[str, str] | None, from_index: bool) -> None:
        """``paths``: stored id → film (from ``--images``); ``from_index``: use the source
        paths the index keeps. Neither: no case has an image."""
        self._paths = paths
        self._from_index = from_index
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether any case can have an image."""
        return self._from_index or bool(self._paths)

    def path(self, stored_id: str, source_path: str | None) -> str | None:
        """The film of ``stored_id`` (``source_path``: what the index stores for it)."""
        if self._paths is not None and stored_id in self._paths:
            return self._paths[stored_id]
        return source_path if self._from_index and not is_link(source_path) else None

    def thumbnail(self, stored_id: str, film: str) -> bytes:
        """The PNG thumbnail of ``film`` (the case ``stored_id``), from the cache if there.

        Raises:
            ImageReadError: the film cannot be read any more.
        """
        with self._lock:
            if stored_id in self._cache:
                self._cache.move_to_end(stored_id)
                return self._cache[stored_id]
        png = _png(load_image(film))
        with self._lock:
            self._cache[stored_id] = png
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return png


def _png(grey: np.ndarray) -> bytes:
    """8-bit grey PNG of a [0, 1] film, longest side at most :data:`THUMBNAIL_SIDE`."""
    img = Image.fromarray(np.clip(np.rint(grey * 255), 0, 255).astype(np.uint8))
    img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def map_dataset(
    spec: str, image_size: int, stored_ids: Callable[[list[str]], list[str]]
) -> dict[str, str]:
    """Stored id → film path for every film of the dataset ``spec`` (``--images``).

    ``stored_ids`` maps source case ids to stored ids (the index's pseudonyms).

    Raises:
        ValueError: the spec cannot be read, or its films have no paths.
    """
    from cxrhash.data.readers import open_dataset

    dataset = open_dataset(spec, image_size)
    if not dataset.paths:
        raise ValueError(f"--images {spec}: this dataset has no film files to show")
    stored = stored_ids(list(dataset.case_ids))
    return {s: str(p) for s, p in zip(stored, dataset.paths, strict=True)}
