"""The options of a ``dicomweb:URL[?key=value&...]`` data source, parsed and checked.

Secrets never appear in the spec: ``password_env`` and ``token_env`` name environment
variables that hold them, and a URL carrying ``user:password@`` is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from cxrhash.data.errors import DataFormatError

SCHEME = "dicomweb"
ALLOWED = (
    "user",
    "password_env",
    "token_env",
    "verify",
    "timeout",
    "page_size",
    "retries",
    "modality",
    "body_part",
    "since",
    "labels",
)
_CODE = re.compile(r"^[A-Z0-9_ ]{1,16}$")  # a DICOM code string (CS)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_PAGE = 10_000


@dataclass(frozen=True)
class DicomWebOptions:
    """Where the server is, how to reach it, and which instances to list.

    Attributes:
        url: The DICOMweb root (``http://host:8042/dicom-web``); no credentials in it.
        user: User name for HTTP basic auth, or ``None``.
        password_env: Environment variable holding the basic-auth password.
        token_env: Environment variable holding a bearer token.
        verify: TLS verification: ``True``, ``False`` or the path of a CA bundle.
        timeout: Seconds to wait for the server to connect and to answer.
        page_size: Instances asked for per QIDO-RS request (``limit``).
        retries: Retries of a transient failure (connection, 429, 502, 503, 504).
        modalities: Modalities listed, one QIDO-RS query each.
        body_parts: Body Part Examined values kept where an instance has one (empty:
            no body-part filter).
        since: Earliest Study Date (``YYYYMMDD``), or ``None``.
        labels: CSV of findings keyed by SOP Instance UID (for ``train`` / ``eval``), or
            ``None`` (films without findings: ``index`` only).
    """

    url: str
    user: str | None = None
    password_env: str | None = None
    token_env: str | None = None
    verify: bool | str = True
    timeout: float = 30.0
    page_size: int = 100
    retries: int = 4
    modalities: tuple[str, ...] = ("CR", "DX")
    body_parts: tuple[str, ...] = ("CHEST",)
    since: str | None = None
    labels: str | None = None

    def secret(self, name: str | None) -> str:
        """The value of the environment variable ``name`` (a password or token)."""
        value = os.environ.get(name or "")
        if not value:
            raise DataFormatError(
                f"DICOMweb source {self.url}: environment variable {name!r} is not set"
            )
        return value


def parse_dicomweb_spec(spec: str) -> DicomWebOptions:
    """``dicomweb:URL[?key=value&...]`` as checked options.

    Raises:
        DataFormatError: Not a ``dicomweb:`` spec, a URL that is not http(s) or that
            carries credentials, an unknown option (the allowed ones listed) or a bad value.
    """
    scheme, colon, rest = spec.partition(":")
    if scheme != SCHEME or not colon:
        raise DataFormatError(f"dataset spec {spec!r}: expected {SCHEME}:URL[?key=value&...]")
    url, _, query = rest.partition("?")
    _check_url(url)
    opts = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(opts) - set(ALLOWED))
    if unknown:
        raise DataFormatError(
            f"dataset spec {SCHEME}:{url}: unknown option(s) {unknown} for {SCHEME}; "
            f"allowed: {list(ALLOWED)}"
        )
    user, password_env, token_env = _auth(url, opts)
    return DicomWebOptions(
        url=url.rstrip("/"),
        user=user,
        password_env=password_env,
        token_env=token_env,
        verify=_verify(url, opts.get("verify", "true")),
        timeout=_number(url, opts, "timeout", 30.0, float, low=0.1),
        page_size=int(_number(url, opts, "page_size", 100, int, top=_MAX_PAGE)),
        retries=int(_number(url, opts, "retries", 4, int, low=0, top=20)),
        modalities=_codes(url, opts.get("modality", "CR,DX"), "modality", required=True),
        body_parts=_codes(url, opts.get("body_part", "CHEST"), "body_part", required=False),
        since=_date(url, opts.get("since")),
        labels=_labels(url, opts.get("labels")),
    )


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataFormatError(
            f"dataset spec {SCHEME}:{parts.scheme}://{parts.hostname or ''}...: "
            "expected an http:// or https:// URL with a host"
        )
    if parts.username is not None or parts.password is not None:
        # Never echo the URL back: its user-info may hold a password.
        raise DataFormatError(
            f"dataset spec {SCHEME}:{parts.scheme}://{parts.hostname}: credentials in the URL "
            "are refused; use ?user=NAME&password_env=VAR or ?token_env=VAR"
        )


def _auth(url: str, opts: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    user, password_env, token_env = (opts.get(k) for k in ("user", "password_env", "token_env"))
    for key, name in (("password_env", password_env), ("token_env", token_env)):
        if name is not None and not _ENV_NAME.match(name):
            raise DataFormatError(
                f"{SCHEME}:{url}: {key} must name an environment variable, got {name!r}"
            )
    if token_env and (user or password_env):
        raise DataFormatError(f"{SCHEME}:{url}: give user+password_env or token_env, not both")
    if bool(user) != bool(password_env):
        raise DataFormatError(f"{SCHEME}:{url}: user and password_env go together")
    return user or None, password_env or None, token_env or None


def _verify(url: str, value: str) -> bool | str:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", ""):
        return True
    if lowered in ("false", "0", "no"):
        return False
    if not Path(value).expanduser().is_file():
        raise DataFormatError(
            f"{SCHEME}:{url}: verify must be true, false or the path of a CA bundle; "
            f"{value!r} is not a file"
        )
    return str(Path(value).expanduser())


def _number(
    url: str,
    opts: dict[str, str],
    key: str,
    default: float,
    kind: type,
    low: float = 1,
    top: float = 3600,
) -> float:
    if key not in opts:
        return default
    try:
        value = kind(opts[key])
    except ValueError:
        value = None
    if value is None or not low <= value <= top:
        raise DataFormatError(
            f"{SCHEME}:{url}: {key} must be a {kind.__name__} in [{low}, {top}], got {opts[key]!r}"
        )
    return value


def _codes(url: str, value: str, key: str, *, required: bool) -> tuple[str, ...]:
    codes = tuple(dict.fromkeys(v.strip().upper() for v in value.split(",") if v.strip()))
    bad = [code for code in codes if not _CODE.match(code)]
    if bad or (required and not codes):
        raise DataFormatError(
            f"{SCHEME}:{url}: {key} must be comma-separated DICOM codes (e.g. CR,DX), got {value!r}"
        )
    return codes


def _date(url: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise DataFormatError(
            f"{SCHEME}:{url}: since must be a date YYYYMMDD, got {value!r}"
        ) from None
    return value


def _labels(url: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not Path(value).expanduser().is_file():
        raise DataFormatError(f"{SCHEME}:{url}: labels must be a CSV file, {value!r} is not one")
    return str(Path(value).expanduser())
