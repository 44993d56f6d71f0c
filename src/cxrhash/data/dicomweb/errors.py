"""A failed HTTP exchange with a DICOMweb server, in words that name the server but never
a password or token (neither is ever in its URL)."""

from __future__ import annotations

import requests

from cxrhash.data.errors import DicomWebError

#: Statuses that mean the credentials (or their absence) were refused.
AUTH_STATUSES = (401, 403)
_DETAIL_CHARS = 200


class ResponseRefused(requests.RequestException):
    """An answer refused before the client parses it (too large, or deflated)."""


def http_status(err: requests.RequestException) -> int | None:
    """The HTTP status of a failed exchange, if the server answered at all."""
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def describe(err: requests.RequestException) -> str:
    """What went wrong, in a few words."""
    status = http_status(err)
    if status is not None:
        return f"HTTP {status}"
    if isinstance(err, ResponseRefused):
        return str(err)
    if isinstance(err, requests.exceptions.SSLError):
        detail = " ".join(str(err).split())[:_DETAIL_CHARS]
        return f"TLS verification failed ({detail})"
    if isinstance(err, requests.Timeout):
        return "timed out"
    if isinstance(err, requests.ConnectionError):
        return "cannot connect"
    return type(err).__name__


def server_error(url: str, err: requests.RequestException, doing: str) -> DicomWebError:
    """A :class:`DicomWebError` for a failure while ``doing`` (``"listing"``) against ``url``."""
    status = http_status(err)
    if status in AUTH_STATUSES:
        return DicomWebError(
            f"DICOMweb server {url} refused the credentials (HTTP {status}) while {doing}; "
            "check ?user= and the variable named by password_env, or token_env"
        )
    return DicomWebError(f"DICOMweb server {url} failed while {doing}: {describe(err)}")
