"""Who may write and how often anyone may upload: the API token and the upload rate limit.

Both are checked in an ASGI layer, before the body of a request is read, so a refused
upload costs the server nothing but its headers:

* **the token**: ``POST /api/cases`` and ``DELETE /api/cases/{id}`` need
  ``Authorization: Bearer <token>``. Without a token configured they answer 403
  (writes disabled); a missing or wrong token answers 401 with ``WWW-Authenticate:
  Bearer``. The comparison is :func:`hmac.compare_digest` of the SHA-256 digests of the
  two byte strings, so it takes the same time whatever the token sent, its length
  included. The token is never logged.
* **the rate limit**: ``POST /api/search`` and ``POST /api/cases`` count against one
  moving window per client (the `limits` library, which slowapi is built on); past it they
  answer 429 with ``Retry-After``. The client is the connection's peer address: a
  ``X-Forwarded-For`` header is not trusted (any client can send one), so behind a
  reverse proxy every request counts against the proxy's address; rate-limit there.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.responses import JSONResponse

from cxrhash.serve.errors import error_response
from cxrhash.serve.middleware import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "CXRHASH_API_TOKEN"
#: Shortest token accepted: 16 characters (``secrets.token_urlsafe(32)`` gives 43).
MIN_TOKEN_LENGTH = 16
#: Uploads per client unless told otherwise: generous for people, a brake for a script.
DEFAULT_UPLOAD_RATE = "120/minute"
WRITES_DISABLED = "writes are disabled: start the server with --token-file"
CASES_PATH = "/api/cases"
UPLOAD_PATHS = ("/api/search", CASES_PATH)
#: STOW-RS (issue #14): a PACS pushes instances to ``/dicomweb/studies[/{study}]``.
STOW_PATH = "/dicomweb/studies"


def is_stow(scope: Scope) -> bool:
    """Whether the request stores instances by STOW-RS (an add: needs the token)."""
    path = scope["path"]
    return scope["method"] == "POST" and (path == STOW_PATH or path.startswith(STOW_PATH + "/"))


def is_upload(scope: Scope) -> bool:
    """Whether the request's body is one or more films (size-limited and rate-limited)."""
    return (scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS) or is_stow(scope)


class TokenError(ValueError):
    """The API token (file or environment) is unusable or exposed."""


def check_token(token: str, source: str) -> bytes:
    """``token`` as bytes after checking it is ≥ 16 visible ASCII characters (a header value).

    Raises:
        TokenError: too short, or with spaces or other characters (never quoted).
    """
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(
            f"the API token from {source} has {len(token)} characters; at least "
            f"{MIN_TOKEN_LENGTH} are needed (make one: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    if not all("!" <= ch <= "~" for ch in token):
        raise TokenError(
            f"the API token from {source} has characters other than visible ASCII "
            "(no spaces): it must fit an Authorization header"
        )
    return token.encode("ascii")


def load_api_token(token_file: Path | None) -> bytes | None:
    """The write token: the first line of ``token_file``, else ``$CXRHASH_API_TOKEN``, else
    ``None`` (writes disabled).

    A token file readable or writable by group or others is refused, as ssh refuses such
    a key: anyone who can read it can change the archive.

    Raises:
        TokenError: the file is unreadable, exposed, or the token too short or malformed.
    """
    if token_file is None:
        raw = os.environ.get(TOKEN_ENV)
        return check_token(raw.strip(), f"${TOKEN_ENV}") if raw else None
    try:
        mode = token_file.stat().st_mode
        text = token_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise TokenError(f"cannot read the API token file {token_file}: {err}") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenError(
            f"the API token file {token_file} is open to other users (mode "
            f"{stat.S_IMODE(mode):o}); chmod 600 it"
        )
    lines = text.strip().splitlines()
    return check_token(lines[0].strip() if lines else "", str(token_file))


@dataclass(frozen=True)
class Refusal:
    """A request refused before its body is read: status, error code, message, headers."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        """The JSON error answer."""
        response = error_response(self.status, self.code, self.message)
        response.headers.update(self.headers)
        return response


def token_refusal(scope: Scope, token: bytes | None) -> Refusal | None:
    """The 403 / 401 refusal of a write request without the right bearer token, or ``None``."""
    if token is None:
        return Refusal(403, "writes_disabled", WRITES_DISABLED)
    scheme, _, given = _header(scope, b"authorization").partition(b" ")
    if scheme.lower() != b"bearer" or not given.strip():
        return Refusal(
            401,
            "token_required",
            "this route needs the API token: Authorization: Bearer <token>",
            {"WWW-Authenticate": 'Bearer realm="cxrhash"'},
        )
    digest = hashlib.sha256(given.strip()).digest()
    if not hmac.compare_digest(digest, hashlib.sha256(token).digest()):
        return Refusal(
            401,
            "invalid_token",
            "the API token is not the server's",
            {"WWW-Authenticate": 'Bearer realm="cxrhash", error="invalid_token"'},
        )
    return None


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return b""


class UploadLimiter:
    """A moving window of ``rate`` (limits notation: ``"120/minute"``, ``"5/second"``)
    uploads per client, in memory (one server process)."""

    def __init__(self, rate: str) -> None:
        try:
            self.item: RateLimitItem = parse(rate)
        except ValueError as err:
            raise ValueError(
                f"upload rate {rate!r} is not N/second, N/minute or N/hour ({err})"
            ) from err
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, client: str) -> int | None:
        """Count one upload of ``client``: ``None`` if allowed, else whole seconds to wait."""
        if self._limiter.hit(self.item, "upload", client):
            return None
        reset = self._limiter.get_window_stats(self.item, "upload", client).reset_time
        return max(1, math.ceil(reset - time.time()))


def is_write(scope: Scope) -> bool:
    """Whether the request adds or removes cases (needs the token)."""
    path, method = scope["path"], scope["method"]
    return (
        (method == "POST" and path == CASES_PATH)
        or (method == "DELETE" and path.startswith(CASES_PATH + "/"))
        or is_stow(scope)
    )


class WriteGuard:
    """ASGI layer: the rate limit of uploads, then the token of writes, before any body."""

    def __init__(self, app: ASGIApp, *, token: bytes | None, limiter: UploadLimiter | None):
        self.app = app
        self.token = token
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal.response()(scope, receive, send)

    def _refusal(self, scope: Scope) -> Refusal | None:
        if is_write(scope) and self.token is None:
            return token_refusal(scope, None)
        if self.limiter is not None and is_upload(scope):
            client = scope.get("client")
            wait = self.limiter.retry_after(client[0] if client else "unknown")
            if wait is not None:
                return Refusal(
                    429,
                    "rate_limited",
                    f"too many uploads from this client (at most {self.limiter.item}); "
                    f"retry in {wait} s",
                    {"Retry-After": str(wait)},
                )
        return token_refusal(scope, self.token) if is_write(scope) else None
