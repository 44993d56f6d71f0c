"""Keyed pseudonyms for what an index stores about patients and films (issue #11).

An index folder must reveal nothing about who is in it, even to someone who
copies it whole. So every identifier is replaced by an HMAC-SHA256 under a
secret key that is never stored in the index:

* the patient id always becomes ``p-`` + 32 hex digits (128 bits);
* the case id (an NIH file name carries the patient number, a folder path may
  carry a name) becomes ``c-`` + 24 hex digits (96 bits; a collision among 10⁹
  films has odds of about 10⁻¹¹), unless the index keeps source names (an
  explicit opt-in, ``--keep-source-names``), which also keeps the source paths.

The key comes from ``CXRHASH_PSEUDONYM_KEY`` (at least 32 hex digits) if set, else
from the key file named by ``CXRHASH_PSEUDONYM_KEY_FILE``, else from
``$XDG_CONFIG_HOME/cxrhash/pseudonym.key`` (``~/.config`` by default). A missing key
file is created on first use with 256 random bits, readable by its owner only.
Whoever holds the key and the source films can recompute a film's pseudonym
(``cxrhash index`` does, to skip films already indexed); without the key a
pseudonym is a random-looking string. The index records the key's id (an HMAC of
a constant, which reveals nothing) so that adding with another key is refused
instead of silently indexing the same films twice.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import time
from pathlib import Path

LOG = logging.getLogger(__name__)

KEY_ENV = "CXRHASH_PSEUDONYM_KEY"
KEY_FILE_ENV = "CXRHASH_PSEUDONYM_KEY_FILE"
KEY_BYTES = 32
_MIN_KEY_BYTES = 16


class PseudonymKeyError(ValueError):
    """The pseudonym key is unreadable, malformed, or stored where it must not be."""


def default_key_file() -> Path:
    """Where the key lives unless ``CXRHASH_PSEUDONYM_KEY_FILE`` says otherwise."""
    named = os.environ.get(KEY_FILE_ENV)
    if named:
        return Path(named).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "cxrhash" / "pseudonym.key"


class Pseudonymizer:
    """HMAC-SHA256 pseudonyms of patient and case ids under one secret key."""

    def __init__(self, key: bytes, source: str = "a key given in code") -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise PseudonymKeyError(
                f"pseudonym key from {source} has {len(key)} bytes; at least "
                f"{_MIN_KEY_BYTES} are needed"
            )
        self._key = key
        self.source = source

    @property
    def key_id(self) -> str:
        """A public tag of the key (an HMAC of a constant): tells keys apart, reveals nothing."""
        return self._mac(b"key-id", b"")[:16]

    def patient(self, patient_id: str) -> str:
        """The stored pseudonym of a patient id."""
        return "p-" + self._mac(b"patient", str(patient_id).encode("utf-8", "surrogateescape"))[:32]

    def case(self, case_id: str) -> str:
        """The pseudonymous case id stored and shown instead of the source name."""
        return "c-" + self._mac(b"case", str(case_id).encode("utf-8", "surrogateescape"))[:24]

    def _mac(self, domain: bytes, message: bytes) -> str:
        return hmac.new(self._key, domain + b"\0" + message, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never show the key
        return f"Pseudonymizer(key_id={self.key_id!r}, source={self.source!r})"


def load_pseudonymizer(*, forbid_under: Path | None = None) -> Pseudonymizer:
    """The pseudonymizer of this machine's key (environment, else key file, created if absent).

    Args:
        forbid_under: a folder the key file must not be in (the index folder: a key
            stored beside the pseudonyms would make them reversible).

    Raises:
        PseudonymKeyError: the key is malformed, unreadable, or inside ``forbid_under``.
    """
    raw = os.environ.get(KEY_ENV)
    if raw:
        return Pseudonymizer(_parse_hex(raw.strip(), f"${KEY_ENV}"), f"${KEY_ENV}")
    path = default_key_file()
    if forbid_under is not None and _is_inside(path, forbid_under):
        raise PseudonymKeyError(
            f"pseudonym key file {path} is inside the index folder {forbid_under}; keep it "
            f"elsewhere (set {KEY_FILE_ENV}), or anyone with the folder can reverse its pseudonyms"
        )
    if not path.exists():
        _create_key_file(path)
    text = _read_key_text(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        LOG.warning(
            "pseudonym key file %s is readable by other users (mode %o); chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return Pseudonymizer(_parse_hex(text, str(path)), str(path))


def _create_key_file(path: Path) -> None:
    """Write a new random key, owner-only, without ever replacing one that exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return
    except OSError as err:
        raise PseudonymKeyError(f"cannot create pseudonym key file {path}: {err}") from err
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    LOG.warning(
        "created pseudonym key %s: keep it (and a backup) safe; without it the index "
        "cannot recognise films it already holds",
        path,
    )


def _read_key_text(path: Path) -> str:
    """The key file's text; waits briefly for a key another process is still writing."""
    for attempt in range(20):
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise PseudonymKeyError(f"cannot read pseudonym key file {path}: {err}") from err
        if text or attempt == 19:
            return text
        time.sleep(0.05)
    return text


def _parse_hex(text: str, source: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError as err:
        raise PseudonymKeyError(
            f"pseudonym key from {source} is not hexadecimal ({err}); expected "
            f"{2 * KEY_BYTES} hex digits"
        ) from err


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True
