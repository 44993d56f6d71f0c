"""Links from an indexed case back to the original instance in a PACS.

A film indexed from a DICOMweb server (issue #14) has as its source location the WADO-RS URL
of its instance, ``{base}/studies/{study}/series/{series}/instances/{sop}``; a film a PACS
pushed (STOW-RS) without the server knowing the PACS's address keeps the same path without
``{base}`` (its UIDs, no URL). Such a URL names
no patient (a server's address and three UIDs; credentials are never part of it), so an
index keeps it even when it keeps no source names (a file name may name the patient, a UID
may not): that is how a search answer links back to the PACS. Anything that is not exactly
such a URL is treated as a file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A DICOM UID: dot-separated numbers without leading zeros, at most 64 characters (PS3.5 9.1).
_UID = r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+"
_URL = re.compile(
    r"(?P<base>https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~\-]+)*)?"
    rf"/studies/(?P<study>{_UID})/series/(?P<series>{_UID})/instances/(?P<sop>{_UID})"
)
#: Longest link kept (a base URL of a few hundred characters and three 64-character UIDs).
MAX_LINK = 512


@dataclass(frozen=True)
class PacsLink:
    """Where an indexed film came from: the DICOMweb base URL (``""``: unknown) and its
    three UIDs."""

    base_url: str
    study_uid: str
    series_uid: str
    sop_uid: str

    @property
    def path(self) -> str:
        """The instance's path under a DICOMweb base URL; what is stored without one."""
        return f"/studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"

    @property
    def wado_url(self) -> str | None:
        """The WADO-RS URL of the instance (what a PACS viewer or ``curl`` fetches), when
        the base URL is known."""
        return self.base_url + self.path if self.base_url else None

    def stored(self) -> str:
        """The source location an index stores for the film."""
        return self.base_url + self.path

    def as_dict(self) -> dict[str, str | None]:
        """The three UIDs and the WADO-RS URL (what a search answer carries)."""
        return {
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "sop_uid": self.sop_uid,
            "wado_url": self.wado_url,
        }


def parse_link(text: str | None) -> PacsLink | None:
    """The :class:`PacsLink` a stored source location is, or ``None`` when it is anything
    else (a file path, a URL with credentials, a query or a malformed UID)."""
    if text is None or len(text) > MAX_LINK:
        return None
    match = _URL.fullmatch(text)
    if match is None or any(len(match[u]) > 64 for u in ("study", "series", "sop")):
        return None
    if {".", ".."} & set((match["base"] or "").split("/")[3:]):
        return None
    return PacsLink(match["base"] or "", match["study"], match["series"], match["sop"])


def is_link(text: str | None) -> bool:
    """Whether ``text`` is a WADO-RS instance URL an index may keep without source names."""
    return parse_link(text) is not None
