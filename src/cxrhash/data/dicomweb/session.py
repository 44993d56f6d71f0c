"""The HTTP session and DICOMweb client of a ``dicomweb:`` source: auth, TLS, retries.

Retries are urllib3's (mounted on the session) and only theirs: the client's own retry
loop is switched off so that a failing server is not asked 5 × 5 times.
"""

from __future__ import annotations

import requests
from dicomweb_client import DICOMwebClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cxrhash.data.dicomweb.options import DicomWebOptions

#: Answers worth asking again: too many requests, bad gateway, unavailable, gateway timeout.
RETRY_STATUSES = (429, 502, 503, 504)
_BACKOFF_S = 0.5
_BACKOFF_MAX_S = 30.0


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


def make_client(options: DicomWebOptions) -> DICOMwebClient:
    """A DICOMweb client of the source's server, over :func:`make_session`."""
    client = DICOMwebClient(options.url, session=make_session(options), timeout=options.timeout)
    client.set_http_retry_params(retry=False)
    return client
