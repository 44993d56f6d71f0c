"""Every error the server answers has one JSON shape: ``{"error": {"code", "message"}}``.

Messages never echo what a client sent (a validation error names the field and the rule,
not the value), and a server fault answers only its request id.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxrhash.index.backends.base import BackendError

LOG = logging.getLogger(__name__)

#: The ``code`` of an error raised as a plain HTTP status (unknown route, wrong method, …).
STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "upload_too_large",
    422: "invalid_request",
}


class ApiError(Exception):
    """An error answered as ``status`` with ``{"error": {"code": code, "message": message}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """The JSON error response."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _status_code(status: int) -> str:
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_")
    except ValueError:
        return "error"


def _validation_message(exc: RequestValidationError) -> str:
    """``where: what`` of each problem, without the offending values."""
    parts = []
    for problem in exc.errors():
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = error_response(exc.status_code, _status_code(exc.status_code), str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", _validation_message(exc))


async def _backend_error(request: Request, exc: Exception) -> JSONResponse:
    rid = getattr(request.state, "request_id", "-")
    LOG.error("request %s: search backend failed: %s", rid, exc)
    return error_response(
        503,
        "backend_unavailable",
        f"the search backend did not answer; try again later (request {rid})",
    )


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    rid = getattr(request.state, "request_id", "-")
    LOG.error("request %s failed: %s", rid, type(exc).__name__)
    return error_response(500, "internal_error", f"internal error (request {rid})")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one JSON shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # A backend that keeps its codes in a server (milvus) may be unreachable for a while.
    app.add_exception_handler(BackendError, _backend_error)
    app.add_exception_handler(Exception, _server_error)
