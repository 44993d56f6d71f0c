"""``create_app``: the retrieval API over one index and the model it was made with.

Routes: ``GET /api/health``, ``GET /api/stats``, ``POST /api/search`` (one film, multipart
field ``image``), ``GET /api/cases/{case_id}``; with a token, ``POST /api/cases`` and
``DELETE /api/cases/{case_id}`` (:mod:`.case_writes`). Errors are JSON (:mod:`.errors`); each
answer carries ``X-Request-ID`` (:mod:`.middleware`). No CORS: the API answers its own
origin only (docs/service.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Query, Request, Response, UploadFile
from fastapi import Path as PathParam

from cxrhash.data.images import ImageReadError
from cxrhash.data.labels import NO_FINDING
from cxrhash.data.uploads import Upload
from cxrhash.inference import EngineSpec
from cxrhash.serve.answers import (
    SearchRequest,
    finding_names,
    pacs_ref,
    search_depth,
    search_result,
)
from cxrhash.serve.case_images import CaseImages, map_dataset
from cxrhash.serve.case_writes import DEFAULT_COMMIT_EVERY, add_case_writes
from cxrhash.serve.errors import ApiError, install_error_handlers
from cxrhash.serve.middleware import MULTIPART_OVERHEAD, RequestGuard
from cxrhash.serve.received import UploadRefused, receive_film
from cxrhash.serve.schemas import (
    CASE_ID_MAX,
    CASE_ID_PATTERN,
    Case,
    ErrorBody,
    Health,
    SearchResult,
    Stats,
)
from cxrhash.serve.searcher import Searcher
from cxrhash.serve.stow import add_stow_routes
from cxrhash.serve.viewer import mount_viewer
from cxrhash.serve.write_guard import DEFAULT_UPLOAD_RATE, is_stow, is_upload

LOG = logging.getLogger(__name__)
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
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
    images: str | None = None,
    api_token: bytes | None = None,
    upload_rate: str | None = DEFAULT_UPLOAD_RATE,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    pacs_url: str | None = None,
    engine: EngineSpec | None = None,
) -> FastAPI:
    """The API over the index at ``index_dir``, searched with ``checkpoint`` (default: the
    one its ``model.json`` names). The model and the index are loaded now, once.
    ``images``: the dataset spec the index was made from, to show its films
    (:mod:`.case_images`; needs the pseudonym key of a pseudonymous index).
    ``api_token`` enables adding and removing cases (:mod:`.case_writes`; ``None``: they
    answer 403); ``upload_rate`` limits the uploads of each client (limits notation,
    ``"120/minute"``; ``None``: no limit); an add commits ``commit_every`` films at a time.
    Films a PACS pushes by STOW-RS (:mod:`.stow`) link back to it under ``pacs_url`` (its
    DICOMweb base URL; ``None``: by their UIDs only). ``engine``: what encodes the films,
    PyTorch (default) or ONNX Runtime.

    Raises:
        FileNotFoundError, CheckpointError, HashIndexError: no such index or checkpoint,
            or one that does not fit the other (all ``ValueError``/``OSError``: user errors).
    """
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
    ckpt = Path(checkpoint) if checkpoint is not None else None
    searcher = Searcher(Path(index_dir), ckpt, engine=engine)
    try:
        paths = None
        if images is not None:
            paths = map_dataset(images, searcher.image_size, searcher.stored_ids)
        case_images = CaseImages(paths, from_index=searcher.index.keeps_source_names)
    except BaseException:
        searcher.close()
        raise

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
    try:
        adder, require_token = add_case_writes(
            app,
            searcher,
            Path(index_dir),
            api_token=api_token,
            upload_rate=upload_rate,
            max_upload_bytes=max_upload_bytes,
            commit_every=commit_every,
        )
        add_stow_routes(app, adder, require_token, pacs_url)
    except BaseException:
        searcher.close()
        raise
    app.add_middleware(  # the outermost layer: added last
        RequestGuard,
        max_body_bytes=max_upload_bytes + MULTIPART_OVERHEAD,
        is_upload=is_upload,
        may_stream=is_stow,
    )
    _add_routes(app, searcher, case_images, max_upload_bytes)
    mount_viewer(app)
    return app


def _add_routes(
    app: FastAPI, searcher: Searcher, images: CaseImages, max_upload_bytes: int
) -> None:
    @app.get("/api/health")
    def health() -> Health:
        """Whether the server answers."""
        return Health(status="ok")

    @app.get("/api/stats")
    def stats() -> Stats:
        """The index (size, bits, backend, shards), its model (id, image size, labels) and
        the engine encoding the films (name; for ONNX, threads and graph file name)."""
        return Stats(**searcher.stats(), serves_images=images.available)

    @app.post(
        "/api/search",
        responses={
            413: {"model": ErrorBody},
            429: {"model": ErrorBody},
            503: {"model": ErrorBody},
            **_ERRORS,
        },
        response_model=SearchResult,
    )
    def search(
        request: Request,
        image: Annotated[UploadFile, File(description="one radiograph: PNG, JPEG, TIFF, DICOM")],
        k: Annotated[int, Query(ge=1, le=100, description="how many neighbours")] = 10,
        rerank: Annotated[Literal["none", "asymmetric", "floats"], Query()] = "none",
        finding: Annotated[
            list[str] | None,
            Query(max_length=20, description="keep only cases with this finding (repeatable)"),
        ] = None,
        preview: Annotated[
            bool, Query(description="include the film for display (`query`)")
        ] = True,
    ) -> Response:
        """The ``k`` films of the index nearest the uploaded one, and its predicted findings
        and heat-map; with ``finding``, the nearest having every finding named."""
        asked = SearchRequest(k, rerank, _check_findings(finding or [], searcher), preview)
        if rerank == "floats" and not searcher.index.stores_floats:
            raise ApiError(
                422,
                "rerank_unavailable",
                "this index stores no float outputs; rerank=floats "
                "needs an index made with --store-floats (try rerank=asymmetric)",
            )
        t0 = time.perf_counter()
        upload = _decode_upload(image, searcher.image_size, max_upload_bytes, request)
        decode_s = time.perf_counter() - t0
        depth = search_depth(k, asked.findings, len(searcher.index))
        found = searcher.search(upload.image, depth, rerank)
        result = search_result(
            found,
            asked,
            model_id=searcher.model_id,
            label_names=searcher.label_names,
            preview=upload.preview,
            searched=depth,
            thumbnails=images.available,
            decode_s=decode_s,
        )
        # Serialised once, by the model that built it: FastAPI would validate it again
        # (about 1 ms of a search's CPU; the schema still documents SearchResult).
        return Response(result.model_dump_json(), media_type="application/json")

    _add_case_routes(app, searcher, images)


def _add_case_routes(app: FastAPI, searcher: Searcher, images: CaseImages) -> None:
    @app.get("/api/cases/{case_id}", responses=_ERRORS)
    def case(case_id: CaseId) -> Case:
        """The stored metadata of a case id returned by a search."""
        stored, findings, source = _known_case(searcher, case_id)
        return Case(
            case_id=stored,
            findings=finding_names(findings),
            source_path=source,
            pacs=pacs_ref(source),
        )

    @app.get(
        "/api/cases/{case_id}/image",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **_ERRORS},
    )
    def case_image(case_id: CaseId) -> Response:
        """The case's film as a PNG thumbnail (longest side 512), when the server has films
        (an index keeping source names, or ``cxrhash serve --images``)."""
        stored, _, source = _known_case(searcher, case_id)
        film = images.path(stored, source)
        if film is None:
            raise ApiError(
                404,
                "no_image",
                "this server has no film for the case: start it with --images SPEC (the "
                "dataset the index was made from) or use an index made with "
                "--keep-source-names",
            )
        try:
            png = images.thumbnail(stored, film)
        except ImageReadError as err:
            LOG.warning("case film unreadable: %s", err.reason)
            raise ApiError(404, "image_unreadable", "the case's film cannot be read") from err
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
        )


CaseId = Annotated[str, PathParam(max_length=CASE_ID_MAX, pattern=CASE_ID_PATTERN)]


def _known_case(searcher: Searcher, case_id: str) -> tuple[str, str, str | None]:
    meta = searcher.case(case_id)
    if meta is None:
        raise ApiError(404, "unknown_case", "no such case in the index")
    return meta


def _check_findings(findings: list[str], searcher: Searcher) -> list[str]:
    """The filter's findings, each one the model knows (422 otherwise)."""
    known = list(dict.fromkeys([*searcher.label_names, NO_FINDING]))
    for name in findings:
        if name not in known:
            raise ApiError(
                422,
                "unknown_finding",
                f"finding filter: not a finding of this model; expected one of {', '.join(known)}",
            )
    return list(dict.fromkeys(findings))


def _decode_upload(upload: UploadFile, size: int, max_bytes: int, request: Request) -> Upload:
    """The uploaded film, read once (:func:`.received.receive_film`).

    Raises:
        ApiError: 413 past ``max_bytes``; 422 ``unreadable_image`` when the library cannot
            read the file (its reason; never the upload's name).
    """
    try:
        return receive_film(upload, size, max_bytes).film
    except UploadRefused as err:
        LOG.info("request %s: upload refused: %s", request.state.request_id, err.message)
        raise ApiError(err.status, err.code, err.message) from err
