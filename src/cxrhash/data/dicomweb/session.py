"""The HTTP session and DICOMweb client of a ``dicomweb:`` source: auth, TLS, retries, and
a guard on what an answer may be.

Retries are urllib3's (mounted on the session) and only theirs: the client's own retry
loop is switched off so that a failing server is not asked 5 × 5 times.

The guard reads each answer before the client does, and refuses one larger than the
largest film the pixel limit admits (:mod:`cxrhash.data.limits`) or a DICOM answer in the
deflated transfer syntax: the client hands it to pydicom, which inflates all of it before
anything could check its size (a decompression bomb).
"""

from __future__ import annotations

import requests
from dicomweb_client import DICOMwebClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cxrhash.data.dicomweb.errors import ResponseRefused
from cxrhash.data.dicomweb.options import DicomWebOptions
from cxrhash.data.limits import max_pixels

#: Answers worth asking again: too many requests, bad gateway, unavailable, gateway timeout.
RETRY_STATUSES = (429, 502, 503, 504)
_BACKOFF_S = 0.5
_BACKOFF_MAX_S = 30.0
#: Bytes an answer may have beyond two per pixel of the pixel limit (headers, JSON).
ANSWER_SLACK_BYTES = 16 << 20
_CHUNK = 1 << 16
_DEFLATED = b"1.2.840.10008.1.2.1.99"
_DICOM_TYPES = ("multipart/related", "application/dicom")


class BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer TOKEN`` on every request (the token stays out of ``repr``)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<token>)"


def make_retry(retries: int) -> Retry:
    """Retry connection failures and :data:`RETRY_STATUSES` with exponential back-off.

    ``Retry-After`` is not obeyed (a hostile server could ask for a day); after the last
    try the failing answer is returned, for the caller to report its status.
    """
    return Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=_BACKOFF_S,
        backoff_max=_BACKOFF_MAX_S,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=False,
        raise_on_status=False,
    )


def make_session(options: DicomWebOptions) -> requests.Session:
    """A session with the source's auth, TLS verification and retries."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=make_retry(options.retries))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.verify = options.verify
    if options.user is not None:
        session.auth = requests.auth.HTTPBasicAuth(
            options.user, options.secret(options.password_env)
        )
    elif options.token_env is not None:
        session.auth = BearerAuth(options.secret(options.token_env))
    return session


def answer_cap() -> int:
    """The most bytes an answer may have: a 16-bit film at the pixel limit, and some."""
    return 2 * max_pixels() + ANSWER_SLACK_BYTES


def guard_answer(response: requests.Response, *args: object, **kwargs: object) -> requests.Response:
    """Read the answer's body up to :func:`answer_cap`, refusing more, or a deflated DICOM.

    A ``requests`` response hook: it runs before the client reads the body.
    """
    cap = answer_cap()
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        response.close()
        raise ResponseRefused(f"answer of {int(declared):,} bytes is over {cap:,}")
    body = bytearray()
    for chunk in response.iter_content(_CHUNK):
        body += chunk
        if len(body) > cap:
            response.close()
            raise ResponseRefused(f"answer runs past {cap:,} bytes")
    kind = response.headers.get("Content-Type", "").lower()
    if kind.startswith(_DICOM_TYPES) and _DEFLATED in body:
        raise ResponseRefused("instance in the deflated transfer syntax (refused unread)")
    # The body is read once, here; the client reads it from the response as usual.
    response._content = bytes(body)
    return response


def make_client(options: DicomWebOptions) -> DICOMwebClient:
    """A DICOMweb client of the source's server, over :func:`make_session`."""
    client = DICOMwebClient(
        options.url,
        session=make_session(options),
        timeout=options.timeout,
        callback=guard_answer,
    )
    client.set_http_retry_params(retry=False)
    return client
