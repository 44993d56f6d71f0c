"""STOW-RS: a PACS pushes new films to ``POST /dicomweb/studies[/{study}]`` (issue #14).

A routing rule of the PACS (Orthanc's DICOMweb plugin, for one) sends each new chest film
as ``multipart/related; type="application/dicom"``. Each part is read as an upload is
(:mod:`.received`: content sniffed, the header de-identified as it is read) and added as
``POST /api/cases`` adds, a batch at a time, with:

* the SOP Instance UID as its case id (stored as its keyed pseudonym, like every case id),
  so an instance pushed twice is found already present;
* no findings (``""``: a pushed film comes without a report; searches show it with none);
* the Patient ID's keyed pseudonym;
* its UIDs as a PACS link (:mod:`cxrhash.index.pacs_links`), with ``--pacs-url`` as the base
  URL when the server is told the PACS's DICOMweb address.

Writes need the API token (the PACS sends it as a bearer header) and count against the
upload rate limit. A request may come chunked (no Content-Length: Orthanc sends them so);
its bytes are counted as they arrive, against the upload size limit. The answer is the
standard Store Instances Response (DICOM JSON, PS3.18 10.5.3): 200 when every instance is
stored (or was already), 202 when some failed, 409 when none was stored; each failure with
its reason code.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, FastAPI, Request, Response
from fastapi import Path as PathParam
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from cxrhash.data.images import ImageReadError
from cxrhash.data.uploads import Upload, load_upload
from cxrhash.index.pacs_links import PacsLink
from cxrhash.serve.case_writes import MAX_IMAGES, WRITE_ERRORS, Adder, AddResult, Pending
from cxrhash.serve.errors import ApiError
from cxrhash.serve.middleware import MULTIPART_OVERHEAD
from cxrhash.serve.schemas import ErrorBody

LOG = logging.getLogger(__name__)
DICOM_TYPE = "application/dicom"
#: Failure reasons of a Store Instances Response (PS3.18 Table 10.5.3-2).
CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xA900
#: Findings stored for a pushed film: none known.
NO_REPORT = ""
_UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$"


@dataclass
class Part:
    """One part of the request: its declared media type and the file its bytes went to."""

    content_type: str
    path: Path


@dataclass
class Stored:
    """What became of each instance: ``(sop_class, sop)`` stored, ``(sop_class, sop,
    reason)`` failed (UIDs ``""`` when unknown)."""

    stored: list[tuple[str, str]]
    failed: list[tuple[str, str, int]]


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a STOW-RS request.

    Raises:
        ApiError: 415 unless ``multipart/related`` with a boundary and, when a ``type`` is
            named, ``application/dicom`` (the only one stored: no DICOM JSON + bulk data).
    """
    media, params = parse_options_header(content_type or "")
    kind = params.get(b"type", DICOM_TYPE.encode()).decode("latin-1").lower()
    if media != b"multipart/related" or kind != DICOM_TYPE or not params.get(b"boundary"):
        raise ApiError(
            415,
            "unsupported_media_type",
            'STOW-RS here takes multipart/related; type="application/dicom" with a boundary, '
            f"got {(content_type or 'none')[:100]!r}",
        )
    return params[b"boundary"]


class PartWriter:
    """Streams a multipart body into one private temporary file per part (mode 0600,
    removed with the :class:`ExitStack` given), keeping each part's Content-Type."""

    def __init__(self, boundary: bytes, stack: ExitStack, max_parts: int) -> None:
        self.parts: list[Part] = []
        self._stack = stack
        self._max_parts = max_parts
        self._file: BinaryIO | None = None
        self._field = b""
        self._headers: dict[bytes, bytes] = {}
        self.parser = MultipartParser(boundary, self._callbacks())

    def _callbacks(self) -> Any:
        def header_field(data: bytes, start: int, end: int) -> None:
            self._field += data[start:end]

        def header_value(data: bytes, start: int, end: int) -> None:
            key = self._field.lower()
            self._headers[key] = self._headers.get(key, b"") + data[start:end]

        def header_end() -> None:
            self._field = b""

        return {
            "on_part_begin": self._begin,
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        if len(self.parts) >= self._max_parts:
            raise ApiError(
                413, "too_many_instances", f"at most {self._max_parts} instances per request"
            )
        fd, name = tempfile.mkstemp(prefix="cxrhash-stow-")
        self._stack.callback(_unlink, name)
        self._file = self._stack.enter_context(os.fdopen(fd, "wb"))
        self._headers = {}
        self.parts.append(Part("", Path(name)))

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.write(data[start:end])

    def _end(self) -> None:
        media, _ = parse_options_header(self._headers.get(b"content-type", b""))
        self.parts[-1].content_type = media.decode("latin-1").lower()
        if self._file is not None:
            self._file.close()


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def _read_instance(part: Part, study: str | None, size: int) -> Upload | int:
    """The film of one part, or the failure reason code (never the file's content)."""
    if part.content_type != DICOM_TYPE:
        return CANNOT_UNDERSTAND
    try:
        upload = load_upload(part.path, size)
    except ImageReadError as err:
        LOG.info("a STOW-RS instance was refused: %s", err.reason)
        return CANNOT_UNDERSTAND
    if upload.uids is None or not upload.preview.dicom:
        return CANNOT_UNDERSTAND  # not a DICOM, or no valid instance UIDs to key it by
    if study is not None and upload.uids.study != study:
        return STUDY_MISMATCH
    return upload


@dataclass
class Stower:
    """Adds the instances of STOW-RS requests through the server's :class:`Adder`."""

    adder: Adder
    pacs_url: str | None

    def store(self, parts: list[Part], study: str | None) -> Stored:
        """Read, de-identify and add every part; what became of each."""
        size = self.adder.searcher.image_size
        pending: list[Pending] = []
        uids: dict[int, tuple[str, str]] = {}
        out = Stored([], [])
        result = AddResult(added=[], already_present=[], refused=[], size=0)
        for i, part in enumerate(parts):
            read = _read_instance(part, study, size)
            if isinstance(read, int):
                out.failed.append(("", "", read))
                continue
            assert read.uids is not None
            link = PacsLink(self.pacs_url or "", read.uids.study, read.uids.series, read.uids.sop)
            sop = read.uids.sop
            pid = read.patient_id or f"unknown-{sop}"
            pending.append(Pending(i, sop, NO_REPORT, pid, read.image, link.stored()))
            uids[i] = (read.uids.sop_class, sop)
            if len(pending) >= self.adder.commit_every:
                self.adder.commit(pending, result)
        self.adder.commit(pending, result)
        for ref in [*result.added, *result.already_present]:
            sop_class, sop = uids[ref.image]
            out.stored.append((sop_class, sop))
        return out


def _sequence(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": items}


def _uid(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def store_response(stored: Stored) -> Response:
    """The Store Instances Response (DICOM JSON) and its status."""
    body: dict[str, Any] = {}
    if stored.stored:
        body["00081199"] = _sequence(
            [{"00081150": _uid(c), "00081155": _uid(s)} for c, s in stored.stored]
        )
    if stored.failed:
        body["00081198"] = _sequence(
            [
                {"00081150": _uid(c), "00081155": _uid(s), "00081197": {"vr": "US", "Value": [r]}}
                for c, s, r in stored.failed
            ]
        )
    status = 200 if not stored.failed else 202 if stored.stored else 409
    return Response(json.dumps(body), status_code=status, media_type="application/dicom+json")


def add_stow_routes(
    app: FastAPI, adder: Adder, require_token: Callable[..., None], pacs_url: str | None
) -> None:
    """``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}`` on ``app``."""
    stower = Stower(adder, pacs_url.rstrip("/") if pacs_url else None)
    max_body = adder.max_bytes + MULTIPART_OVERHEAD
    dicom_json = {"application/dicom+json": {"schema": {"type": "object"}}}
    responses: dict[int | str, dict[str, Any]] = {
        **WRITE_ERRORS,
        415: {"model": ErrorBody, "description": "not multipart/related of application/dicom"},
        **{
            s: {"description": d, "content": dicom_json}
            for s, d in (
                (200, "every instance stored (or already there): a Store Instances Response"),
                (202, "some instances failed (FailedSOPSequence says which and why)"),
                (409, "no instance was stored"),
            )
        },
    }

    async def store(request: Request, study: str | None) -> Response:
        boundary = boundary_of(request.headers.get("content-type"))
        with ExitStack() as stack:
            writer = PartWriter(boundary, stack, MAX_IMAGES)
            received = 0
            try:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > max_body:  # a chunked request has no Content-Length
                        raise ApiError(
                            413, "upload_too_large", f"the request is over {max_body} bytes"
                        )
                    writer.parser.write(chunk)
                writer.parser.finalize()
            except MultipartParseError as err:
                raise ApiError(400, "bad_request", f"malformed multipart body ({err})") from err
            if not writer.parts:
                raise ApiError(400, "bad_request", "the request holds no instance")
            stored = await run_in_threadpool(stower.store, writer.parts, study)
        LOG.info(
            "request %s: STOW-RS %d stored, %d failed",
            request.state.request_id,
            len(stored.stored),
            len(stored.failed),
        )
        return store_response(stored)

    @app.post(
        "/dicomweb/studies",
        dependencies=[Depends(require_token)],
        responses=responses,
        response_class=Response,
    )
    async def stow(request: Request) -> Response:
        """STOW-RS Store Instances: DICOM films pushed by a PACS, indexed (de-identified)."""
        return await store(request, None)

    @app.post(
        "/dicomweb/studies/{study}",
        dependencies=[Depends(require_token)],
        responses=responses,
        response_class=Response,
    )
    async def stow_study(
        request: Request,
        study: Annotated[str, PathParam(max_length=64, pattern=_UID_PATTERN)],
    ) -> Response:
        """STOW-RS Store Instances of one study (an instance of another study fails)."""
        return await store(request, study)
