"""``create_app``: the retrieval API over one index and the model it was made with.

Routes: ``GET /api/health``, ``GET /api/stats``, ``POST /api/search`` (one film, multipart
field ``image``), ``GET /api/cases/{case_id}``. Errors are JSON (:mod:`.errors`); each
answer carries ``X-Request-ID`` (:mod:`.middleware`). No CORS: the API answers its own
origin only (docs/service.md).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi import Path as PathParam

from cxrhash.data.images import ImageReadError, load_resized
from cxrhash.retrieve import DecodedSearch
from cxrhash.serve.errors import ApiError, install_error_handlers
from cxrhash.serve.middleware import MULTIPART_OVERHEAD, RequestGuard
from cxrhash.serve.schemas import (
    Case,
    Closeness,
    ErrorBody,
    Health,
    Hit,
    SearchResult,
    Stats,
    Timings,
)
from cxrhash.serve.searcher import Searcher

LOG = logging.getLogger(__name__)
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: A predicted finding is one whose probability reaches this.
PREDICTED_AT = 0.5
#: What a case id may be: a pseudonym (``c-`` + hex) or a source name without a path.
CASE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
CASE_ID_MAX = 128
_CHUNK = 1 << 20
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    404: {"model": ErrorBody},
    422: {"model": ErrorBody},
}


def create_app(
    index_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The API over the index at ``index_dir``, searched with ``checkpoint`` (default: the
    one its ``model.json`` names). The model and the index are loaded now, once.

    Raises:
        FileNotFoundError, CheckpointError, HashIndexError: no such index or checkpoint,
            or one that does not fit the other (all ``ValueError``/``OSError``: user errors).
    """
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
    searcher = Searcher(Path(index_dir), Path(checkpoint) if checkpoint is not None else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        searcher.close()

    app = FastAPI(
        title="cxrhash retrieval API",
        summary="Chest radiographs like this one, from a deep-hashing index (issue #13, first "
        "increment).",
        lifespan=lifespan,
    )
    app.state.searcher = searcher
    app.state.max_upload_bytes = max_upload_bytes
    install_error_handlers(app)
    app.add_middleware(
        RequestGuard,
        max_body_bytes=max_upload_bytes + MULTIPART_OVERHEAD,
        upload_paths=("/api/search",),
    )
    _add_routes(app, searcher, max_upload_bytes)
    return app


def _add_routes(app: FastAPI, searcher: Searcher, max_upload_bytes: int) -> None:
    @app.get("/api/health")
    def health() -> Health:
        """Whether the server answers."""
        return Health(status="ok")

    @app.get("/api/stats")
    def stats() -> Stats:
        """The index (size, bits, backend, shards) and its model (id, image size, labels)."""
        return Stats(**searcher.stats())

    @app.post("/api/search", responses={413: {"model": ErrorBody}, **_ERRORS})
    def search(
        request: Request,
        image: Annotated[UploadFile, File(description="one radiograph: PNG, JPEG, TIFF, DICOM")],
        k: Annotated[int, Query(ge=1, le=100, description="how many neighbours")] = 10,
        rerank: Annotated[Literal["none", "asymmetric", "floats"], Query()] = "none",
    ) -> SearchResult:
        """The ``k`` films of the index nearest the uploaded one, and its predicted findings."""
        if rerank == "floats" and not searcher.index.stores_floats:
            raise ApiError(
                422,
                "rerank_unavailable",
                "this index stores no float outputs; rerank=floats "
                "needs an index made with --store-floats (try rerank=asymmetric)",
            )
        t0 = time.perf_counter()
        decoded = _decode_upload(image, searcher.image_size, max_upload_bytes, request)
        decode_s = time.perf_counter() - t0
        found = searcher.search(decoded, k, rerank)
        return _search_result(found, searcher, k, rerank, decode_s)

    @app.get("/api/cases/{case_id}", responses=_ERRORS)
    def case(
        case_id: Annotated[str, PathParam(max_length=CASE_ID_MAX, pattern=CASE_ID_PATTERN)],
    ) -> Case:
        """The stored metadata of a case id returned by a search."""
        meta = searcher.case(case_id)
        if meta is None:
            raise ApiError(404, "unknown_case", "no such case in the index")
        stored, findings, source = meta
        return Case(case_id=stored, findings=findings.split("|"), source_path=source)


def _decode_upload(upload: UploadFile, size: int, max_bytes: int, request: Request) -> np.ndarray:
    """The uploaded film decoded and resized to ``size``², through a private temporary file
    (mode 0600, removed after): the library reads files, and sniffs their content itself.

    Raises:
        ApiError: 413 past ``max_bytes``; 422 ``unreadable_image`` when the library cannot
            read the file (its reason; never the upload's name).
    """
    fd, name = tempfile.mkstemp(prefix="cxrhash-upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            written = 0
            while chunk := upload.file.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise ApiError(413, "upload_too_large", f"the upload is over {max_bytes} bytes")
                out.write(chunk)
        try:
            return load_resized(name, size)
        except ImageReadError as err:
            LOG.info("request %s: upload unreadable: %s", request.state.request_id, err.reason)
            raise ApiError(422, "unreadable_image", err.reason) from err
    finally:
        with suppress(FileNotFoundError):
            os.unlink(name)


def _search_result(
    found: DecodedSearch, searcher: Searcher, k: int, rerank: str, decode_s: float
) -> SearchResult:
    predicted = found.predicted(0, searcher.label_names)
    positive = [n for n, p in predicted.items() if p >= PREDICTED_AT]
    hits = []
    for h in found.hits[0]:
        findings = h.findings.split("|")
        hits.append(
            Hit(
                rank=h.rank,
                case_id=h.case_id,
                distance=h.distance,
                score=h.score,
                findings=findings,
                shared_findings=[f for f in findings if f in positive],
            )
        )
    timings = Timings(
        decode_ms=1000 * decode_s,
        encode_ms=1000 * found.encode_seconds,
        search_ms=1000 * found.search_seconds,
    )
    return SearchResult(
        model_id=searcher.model_id,
        k=k,
        rerank=rerank,
        predicted=predicted,
        predicted_findings=positive,
        hits=hits,
        timings=timings,
        closeness=_closeness(found),
    )


def _closeness(found: DecodedSearch) -> Closeness | None:
    """The query's closeness to the archive, ``None`` when unknown (no calibration)."""
    assessed = found.closeness[0] if found.closeness else None
    return None if assessed is None else Closeness.model_validate(assessed.as_dict())
