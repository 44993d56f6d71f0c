"""Reaching Milvus: the ``uri`` forms, the parameters' ranges, the client, and errors a
person can act on.

pymilvus raises ``MilvusException`` (not a ``ValueError``) for a server that does not
answer or a Lite file in a missing folder, and logs its own error line first; here both
become one :class:`MilvusUnavailableError` naming the uri and what was expected. A
missing ``milvus`` extra is :class:`MilvusNotInstalledError`, both an ``ImportError``
and a ``ValueError``, so callers that treat user errors as ``ValueError`` show its
install hint.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Any

from cxrhash.index.backends.base import BackendError

MAX_TOPK = 16_384  # Milvus's limit on topk, nq and a query's result window
#: Seconds pymilvus waits for a server to answer before giving up (its own default).
DEFAULT_TIMEOUT = 10.0
SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
_INSTALL = 'the milvus backend needs pymilvus and milvus-lite: pip install "cxrhash[milvus]"'


class MilvusNotInstalledError(ImportError, ValueError):
    """pymilvus (the ``milvus`` extra) is not installed."""


class MilvusUnavailableError(BackendError):
    """The Milvus server (or Lite file) named by ``uri`` cannot be reached or opened."""


class _DropNoise(logging.Filter):
    """Drop pymilvus's own log line for a failed connection (the raised error says it) and
    its warning that Milvus Lite gives iterators no server timestamp (harmless: every
    request here asks for Strong consistency)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "Failed to create new connection" not in text and "mvccTs" not in text


def normalise_uri(uri: str) -> str:
    """Server URIs unchanged; a Milvus Lite path made absolute (it goes into saved files)."""
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"the milvus uri must be a non-empty string, got {uri!r}")
    if uri.startswith(SCHEMES):
        return uri
    if not uri.endswith(".db"):
        raise ValueError(
            f"the milvus uri must be a Milvus Lite file ending in .db or a server address "
            f"(http://host:19530), got {uri!r}"
        )
    return str(Path(uri).expanduser().resolve())


def check_values(collection: object, slack: int, max_limit: int, timeout: float) -> None:
    """ValueError naming the first of the backend's parameters out of its range."""
    if not isinstance(collection, str) or not _COLLECTION_NAME.match(collection):
        raise ValueError(
            "the milvus collection must be a name of letters, digits and underscores "
            f"(not starting with a digit, at most 200 characters), got {collection!r}"
        )
    if int(slack) < 0 or not 1 <= int(max_limit) <= MAX_TOPK:
        raise ValueError(f"need slack >= 0 and 1 <= max_limit <= {MAX_TOPK}")
    if not float(timeout) > 0:
        raise ValueError(f"the milvus timeout must be a positive number of seconds, got {timeout}")


def check_installed() -> None:
    """Raise :class:`MilvusNotInstalledError` with the install hint if pymilvus is absent."""
    if importlib.util.find_spec("pymilvus") is None:
        raise MilvusNotInstalledError(_INSTALL)


def connect(uri: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """A ``MilvusClient`` for ``uri`` (normalised), usable from any one thread at a time.

    Raises:
        MilvusNotInstalledError: pymilvus is not installed.
        MilvusUnavailableError: no server answers at ``uri`` within ``timeout`` seconds,
            or a Lite file cannot be opened there.
    """
    try:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException
    except ImportError as err:
        raise MilvusNotInstalledError(_INSTALL) from err
    for name in ("pymilvus.milvus_client._utils", "pymilvus.orm.iterator"):
        logging.getLogger(name).addFilter(_FILTER)
    with warnings.catch_warnings():
        # milvus-lite 2.5 imports the deprecated pkg_resources when it starts.
        warnings.filterwarnings(
            "ignore", message="pkg_resources is deprecated", category=UserWarning
        )
        try:
            # An alias of its own: pymilvus shares one connection per uri, which close would end.
            return MilvusClient(
                uri=uri,
                token=os.environ.get("MILVUS_TOKEN", ""),
                alias=f"cxrhash-{uuid.uuid4().hex}",
                timeout=timeout,
            )
        except MilvusException as err:
            raise MilvusUnavailableError(_unavailable(uri, timeout, err)) from err


def _unavailable(uri: str, timeout: float, err: Any) -> str:
    """What went wrong reaching ``uri``, and what the uri should have been."""
    reason = getattr(err, "message", None) or str(err)
    if uri.startswith(SCHEMES):
        return (
            f"no Milvus server answered at uri {uri!r} within {timeout:g} s ({reason}); "
            "start it or give the address of a running one (http://host:19530)"
        )
    return (
        f"cannot open the Milvus Lite file at uri {uri!r} ({reason}); it must be a .db path "
        "in an existing, writable folder that no other process has open (a Lite file serves "
        "one process at a time: stop a `cxrhash serve` on it first, or use a Milvus server)"
    )


_FILTER = _DropNoise()
