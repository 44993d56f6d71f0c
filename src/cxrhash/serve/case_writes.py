"""Adding and removing cases through the API: ``POST /api/cases``, ``DELETE /api/cases/{id}``.

Both need the API token (:mod:`.write_guard`). An added film's case id is derived from its
content, ``sha256-`` + the SHA-256 of the uploaded bytes, so the same file sent again is
found already present; the index stores it as its keyed pseudonym (or as is, in an index
keeping source names), which is the id answered. The upload's file name is never stored,
logged or answered (it may name the patient): an image is referred to by its position in
the request (``image``: 0, 1, …).

Each batch of ``commit_every`` decoded films is encoded and committed as one job of the
server's worker thread (atomic: the manifest is the commit point), so searches queued
meanwhile run between the batches of a bulk add and only ever see committed batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request, Response, Security, UploadFile
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from cxrhash.data.labels import NO_FINDING, normalize_label
from cxrhash.index.errors import ConcurrentWriteError, UnknownCaseIdError
from cxrhash.retrieve import encode_images
from cxrhash.serve.errors import ApiError
from cxrhash.serve.index_refresh import IndexRefresher, RefreshGuard
from cxrhash.serve.received import ReceivedFilm, UploadRefused, receive_film
from cxrhash.serve.schemas import CASE_ID_MAX, CASE_ID_PATTERN, ErrorBody
from cxrhash.serve.searcher import Searcher
from cxrhash.serve.write_guard import UploadLimiter, WriteGuard, token_refusal

LOG = logging.getLogger(__name__)
#: Films encoded and committed together: small, so searches interleave with a bulk add.
DEFAULT_COMMIT_EVERY = 8
#: Most films in one ``POST /api/cases`` (send more in several requests).
MAX_IMAGES = 256
#: Longest patient id accepted (DICOM's PatientID is at most 64 characters).
MAX_PATIENT_ID = 64
_BEARER = HTTPBearer(auto_error=False, description="the server's API token (--token-file)")
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 411, 413, 422, 429, 503)
}


class CaseRef(BaseModel):
    """An uploaded image (its position in the request) and the case id the index answers."""

    image: int
    case_id: str


class RefusedImage(BaseModel):
    """An uploaded image that was not added, and why (never its file name)."""

    image: int
    code: str
    reason: str


class AddResult(BaseModel):
    """``POST /api/cases``: what became of each image, and the index's size after."""

    added: list[CaseRef]
    already_present: list[CaseRef]
    refused: list[RefusedImage]
    size: int


class Refused(Exception):
    """One image of an add is refused with ``code`` and ``reason`` (the others go on)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Pending:
    """A decoded film waiting for its batch's commit."""

    image: int
    source_id: str
    findings: str
    patient_id: str
    pixels: np.ndarray
    source_path: str | None = None


def parse_findings(text: str, pathologies: list[str]) -> str:
    """The stored findings of a ``|``-separated list of names (``Effusion|Mass``), in the
    model's order, or ``No Finding`` (alone); names match as ``data.labels`` normalises them.

    Raises:
        Refused: an empty list, a name the model does not know, or ``No Finding`` with others.
    """
    names = {normalize_label(n) for n in text.split("|") if n.strip()}
    if not names:
        raise Refused("invalid_findings", f"no findings given: send {NO_FINDING!r} for none")
    if NO_FINDING in names:
        if len(names) > 1:
            raise Refused("invalid_findings", f"{NO_FINDING!r} cannot go with other findings")
        return NO_FINDING
    if not names <= set(pathologies):
        raise Refused(
            "invalid_findings",
            f"unknown finding name(s); this model knows {', '.join(pathologies)} "
            f"and {NO_FINDING!r}",
        )
    return "|".join(p for p in pathologies if p in names)


def _receive(upload: UploadFile, size: int, max_bytes: int) -> ReceivedFilm:
    """One image of an add, read as a search's upload is (:mod:`.received`).

    Raises:
        Refused: over ``max_bytes`` or unreadable (the library's reason).
    """
    try:
        return receive_film(upload, size, max_bytes)
    except UploadRefused as err:
        raise Refused(err.code, err.message) from err


def _patient_id(given: str | None, source_id: str, from_dicom: str | None) -> str:
    """The patient id stored (as its pseudonym): the one given, else the DICOM's, else the
    film's own id (a film of unknown patient is its own patient)."""
    if given:
        if len(given) > MAX_PATIENT_ID or not given.isprintable():
            raise Refused(
                "invalid_patient_id",
                f"a patient id is at most {MAX_PATIENT_ID} printable characters",
            )
        return given
    return from_dicom or f"unknown-{source_id}"


@dataclass
class Adder:
    """Adds the images of one request, a batch of ``commit_every`` at a time."""

    searcher: Searcher
    refresher: IndexRefresher
    max_bytes: int
    commit_every: int

    def add(
        self, images: list[UploadFile], findings: list[str], patient_ids: list[str] | None
    ) -> AddResult:
        """Decode, encode and commit ``images``: each is added, found already present
        (the same file added before, or earlier in this request) or refused with its reason."""
        result = AddResult(added=[], already_present=[], refused=[], size=0)
        pending: list[Pending] = []
        pathologies = [n for n in self.searcher.label_names if n != NO_FINDING]
        for i, upload in enumerate(images):
            try:
                text = parse_findings(findings[i], pathologies)
                received = _receive(upload, self.searcher.image_size, self.max_bytes)
                source = f"sha256-{received.sha256}"
                given = patient_ids[i] if patient_ids else None
                pid = _patient_id(given, source, received.film.patient_id)
            except Refused as refused:
                result.refused.append(
                    RefusedImage(image=i, code=refused.code, reason=refused.reason)
                )
                continue
            pending.append(Pending(i, source, text, pid, received.film.image))
            if len(pending) >= self.commit_every:
                self.commit(pending, result)
        self.commit(pending, result)
        result.size = self.searcher._run(lambda: len(self.searcher.index))
        return result

    def commit(self, pending: list[Pending], result: AddResult) -> None:
        """Commit ``pending`` (one job of the worker thread) and empty it."""
        if pending:
            for ref, new in self.searcher._run(self._commit_job, list(pending)):
                (result.added if new else result.already_present).append(ref)
            pending.clear()

    def _commit_job(self, pending: list[Pending]) -> list[tuple[CaseRef, bool]]:
        """On the worker thread: add the films of ``pending`` not in the index yet, in one
        atomic commit; each film's case id and whether this commit added it. When another
        process committed in between, the index is opened again and the job done again."""
        self.refresher.refresh()
        try:
            fresh = self._add_new(pending)
        except ConcurrentWriteError:
            self.refresher.refresh(force=True)
            fresh = self._add_new(pending)
        index = self.searcher.index
        return [
            (
                CaseRef(image=p.image, case_id=index.stored_case_id(p.source_id)),
                fresh.get(p.source_id) is p,
            )
            for p in pending
        ]

    def _add_new(self, pending: list[Pending]) -> dict[str, Pending]:
        """Add the first film of each content id of ``pending`` not in the index, in one
        atomic ``add``; returns them by content id."""
        index = self.searcher.index
        fresh: dict[str, Pending] = {}
        present = index.contains([p.source_id for p in pending])
        for p, there in zip(pending, present, strict=True):
            if not there and p.source_id not in fresh:
                fresh[p.source_id] = p
        if fresh:
            new = list(fresh.values())
            codes, out, _ = encode_images(self.searcher.model, [p.pixels for p in new])
            index.add(
                codes,
                [p.source_id for p in new],
                [p.findings for p in new],
                patient_ids=[p.patient_id for p in new],
                source_paths=[p.source_path for p in new],
                floats=out.hash.float().numpy() if index.stores_floats else None,
            )
        return fresh


def _remove_job(searcher: Searcher, refresher: IndexRefresher, case_id: str) -> bool:
    """On the worker thread: remove the live case stored as ``case_id``; whether there was one."""
    refresher.refresh()
    try:
        try:
            return searcher.index.remove_stored([case_id]) == 1
        except ConcurrentWriteError:  # another process committed in between: on top of it
            refresher.refresh(force=True)
            return searcher.index.remove_stored([case_id]) == 1
    except UnknownCaseIdError:
        return False


def add_case_writes(
    app: FastAPI,
    searcher: Searcher,
    index_dir: Path,
    *,
    api_token: bytes | None,
    upload_rate: str | None,
    max_upload_bytes: int,
    commit_every: int = DEFAULT_COMMIT_EVERY,
) -> tuple[Adder, Callable[..., None]]:
    """Add the write routes, the token and rate-limit layer and the refresh of the index
    after other processes' commits to ``app``; call before the outermost middleware.

    With a token, the pseudonym key is checked against the index now (a wrong key fails
    the start, not the first upload). Returns the adder (its refresher is also
    ``app.state.refresher``) and the token check, for other write routes (:mod:`.stow`).

    Raises:
        ValueError: ``commit_every`` < 1 or a bad ``upload_rate``; IndexMismatchError or
            PseudonymKeyError: writes enabled with a key that is not the index's.
    """
    if commit_every < 1:
        raise ValueError(f"commit_every must be positive, got {commit_every}")
    limiter = UploadLimiter(upload_rate) if upload_rate else None
    if api_token is not None:
        searcher._run(searcher.index.patient_hash, "key check")
    refresher = IndexRefresher(searcher, index_dir)
    app.state.refresher = refresher
    app.add_middleware(RefreshGuard, refresher=refresher)
    app.add_middleware(WriteGuard, token=api_token, limiter=limiter)
    adder = Adder(searcher, refresher, max_upload_bytes, commit_every)
    require_token = _token_dependency(api_token)
    _add_routes(app, adder, require_token)
    return adder, require_token


def _token_dependency(api_token: bytes | None) -> Callable[..., None]:
    """The token check as a route dependency: documents the bearer scheme in the OpenAPI
    schema, and checks again what :class:`WriteGuard` checked before the body was read."""

    def require_token(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    ) -> None:
        refusal = token_refusal(request.scope, api_token)
        if refusal is not None:
            raise ApiError(refusal.status, refusal.code, refusal.message)

    return require_token


def _add_routes(app: FastAPI, adder: Adder, require_token: Callable[..., None]) -> None:
    searcher = adder.searcher

    @app.post("/api/cases", dependencies=[Depends(require_token)], responses=WRITE_ERRORS)
    def add_cases(
        request: Request,
        images: Annotated[
            list[UploadFile], File(description="one or more radiographs: PNG, JPEG, TIFF, DICOM")
        ],
        findings: Annotated[
            list[str],
            Form(description="per image, in order: its findings, `|`-separated, or No Finding"),
        ],
        patient_ids: Annotated[
            list[str] | None,
            Form(description="per image, optional: its patient id (stored as a pseudonym)"),
        ] = None,
    ) -> AddResult:
        """Add films with their findings; each is answered added, already present or
        refused (with the reason), by its position in the request."""
        _check_counts(len(images), len(findings), patient_ids)
        result = adder.add(images, findings, patient_ids)
        LOG.info(
            "request %s: %d added, %d already present, %d refused",
            request.state.request_id,
            len(result.added),
            len(result.already_present),
            len(result.refused),
        )
        if not result.added and not result.already_present:
            reasons = "; ".join(f"image {r.image}: {r.reason}" for r in result.refused)
            raise ApiError(422, "nothing_added", f"no image was added: {reasons}")
        return result

    @app.delete(
        "/api/cases/{case_id}",
        status_code=204,
        dependencies=[Depends(require_token)],
        responses=WRITE_ERRORS,
    )
    def remove_case(
        case_id: Annotated[str, PathParam(max_length=CASE_ID_MAX, pattern=CASE_ID_PATTERN)],
    ) -> Response:
        """Remove a case (by the id a search or an add answered) from the index."""
        if not searcher._run(_remove_job, searcher, adder.refresher, case_id):
            raise ApiError(404, "unknown_case", "no such case in the index")
        return Response(status_code=204)


def _check_counts(n_images: int, n_findings: int, patient_ids: list[str] | None) -> None:
    """422 unless there is one ``findings`` (and ``patient_ids``, if any) per image."""
    if n_images > MAX_IMAGES:
        raise ApiError(
            422, "invalid_request", f"images: at most {MAX_IMAGES} per request, send the rest after"
        )
    if n_findings != n_images:
        raise ApiError(
            422, "invalid_request", f"findings: one per image needed, {n_findings} for {n_images}"
        )
    if patient_ids is not None and len(patient_ids) != n_images:
        raise ApiError(
            422,
            "invalid_request",
            f"patient_ids: one per image when given, {len(patient_ids)} for {n_images}",
        )
