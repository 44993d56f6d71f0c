"""The ASGI layer in front of every route: a request id on each answer and log line, and the
upload size checked from ``Content-Length`` before any of the body is read."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cxrhash.serve.errors import error_response

LOG = logging.getLogger(__name__)
REQUEST_ID_HEADER = "X-Request-ID"
#: Room for the multipart framing (boundaries, part headers) around the uploaded file.
MULTIPART_OVERHEAD = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def loggable_path(path: str) -> str:
    """The route of ``path`` as logged: a case id (perhaps a source name) is left out."""
    if path.startswith("/api/cases/"):
        return "/api/cases/{case_id}"
    return "/dicomweb/studies/{study}" if path.startswith("/dicomweb/studies/") else path


class RequestGuard:
    """Give each HTTP request a uuid4-hex id (``request.state.request_id``, the
    ``X-Request-ID`` answer header, the log line), and refuse the body of a request that
    ``is_upload`` without ``Content-Length`` (411) or above ``max_body_bytes`` (413) unread.
    A request that ``may_stream`` may come without ``Content-Length`` (chunked, as a PACS
    sends STOW-RS): its route counts the bytes as they arrive."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        is_upload: Callable[[Scope], bool],
        may_stream: Callable[[Scope], bool] = lambda scope: False,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.is_upload = is_upload
        self.may_stream = may_stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            LOG.info(
                "request %s %s %s -> %d in %.1f ms",
                rid,
                scope["method"],
                loggable_path(scope["path"]),
                status["code"],
                1000 * (time.perf_counter() - t0),
            )

    def _refusal(self, scope: Scope) -> Any:
        """The error response for a request refused before its body is read, or ``None``."""
        if not self.is_upload(scope):
            return None
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is None and self.may_stream(scope):
            return None
        if length is None:
            return error_response(411, "length_required", "an upload needs a Content-Length")
        try:
            size = int(length)
        except ValueError:
            return error_response(400, "bad_request", "Content-Length is not a number")
        if size > self.max_body_bytes:
            return error_response(
                413,
                "upload_too_large",
                f"the request body is {size} bytes; uploads are limited to "
                f"{self.max_body_bytes - MULTIPART_OVERHEAD} bytes",
            )
        return None
