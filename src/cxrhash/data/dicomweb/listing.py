"""List a DICOMweb server's chest radiographs with QIDO-RS, a page at a time.

One query per modality (a comma-separated ``Modality=CR,DX`` is not understood by every
server), paged with ``offset``/``limit`` until a page comes back empty (a server may cap a
page below ``limit``). Body Part Examined is filtered here, not by the server, because the
filter applies only where an instance has one (Orthanc's QIDO-RS drops instances without
it). The server's filters are checked again on each answer. Patient attributes that QIDO-RS
returns are dropped as each record is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests
from dicomweb_client import DICOMwebClient

from cxrhash.data.dicomweb.errors import server_error
from cxrhash.data.dicomweb.options import DicomWebOptions
from cxrhash.data.errors import DicomWebError

LOG = logging.getLogger(__name__)

_STUDY, _SERIES, _SOP = "0020000D", "0020000E", "00080018"
_MODALITY, _BODY_PART, _STUDY_DATE = "00080060", "00180015", "00080020"
_FIELDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality")
_EXTRA_FIELDS = ["BodyPartExamined", "StudyDate"]


@dataclass(frozen=True)
class InstanceRef:
    """One listed instance: its UIDs and the values the filters read (nothing on the patient).

    Attributes:
        study_uid, series_uid, sop_uid: Study, Series and SOP Instance UIDs.
        modality: Its Modality.
        body_part: Its Body Part Examined, or ``None`` where it has none.
        study_date: Its Study Date (``YYYYMMDD``), or ``None``.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    body_part: str | None
    study_date: str | None


def list_instances(
    client: DICOMwebClient,
    options: DicomWebOptions,
    on_skip: Callable[[str], None] | None = None,
) -> Iterator[InstanceRef]:
    """The server's instances that pass the source's filters, modality by modality.

    ``on_skip`` is told why each unusable record (no UIDs, say) was skipped; by default
    it is logged.

    Raises:
        DicomWebError: The server cannot be reached, refuses the credentials, fails a
            query after its retries, or answers with something that is not a listing.
    """
    skip = on_skip or (lambda reason: LOG.warning("DICOMweb listing: %s", reason))
    for modality in options.modalities:
        for record in _pages(client, options, modality):
            ref = _to_ref(record)
            if isinstance(ref, str):
                skip(ref)
            elif _wanted(ref, options, modality):
                yield ref


def _pages(
    client: DICOMwebClient, options: DicomWebOptions, modality: str
) -> Iterator[dict[str, Any]]:
    """Every record of one modality's query, page by page."""
    filters = {"Modality": modality}
    if options.since:
        filters["StudyDate"] = f"{options.since}-"
    offset, previous = 0, None
    while True:
        page = _query(client, options, filters, offset)
        if not page:
            return
        if page == previous:
            raise DicomWebError(
                f"DICOMweb server {options.url} answered offset {offset} with the page before "
                "it (it ignores offset?); stopped listing"
            )
        yield from page
        offset, previous = offset + len(page), page


def _query(
    client: DICOMwebClient, options: DicomWebOptions, filters: dict[str, str], offset: int
) -> list[dict[str, Any]]:
    try:
        page = client.search_for_instances(
            limit=options.page_size,
            offset=offset,
            fields=_EXTRA_FIELDS,
            search_filters=dict(filters),
        )
    except requests.RequestException as err:
        raise server_error(options.url, err, "listing") from None
    except ValueError as err:  # a body that is not JSON
        raise DicomWebError(
            f"DICOMweb server {options.url} answered a QIDO-RS query with something that "
            f"is not DICOM JSON ({type(err).__name__})"
        ) from None
    if not isinstance(page, list) or not all(isinstance(item, dict) for item in page):
        raise DicomWebError(
            f"DICOMweb server {options.url} answered a QIDO-RS query with something that "
            "is not a list of DICOM JSON datasets"
        )
    return page


def _text(record: dict[str, Any], tag: str) -> str | None:
    """A single string value of a DICOM JSON record, or ``None``."""
    element = record.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    if not isinstance(values, list) or not values or not isinstance(values[0], str | int):
        return None
    text = str(values[0]).strip()
    return text or None


def _to_ref(record: dict[str, Any]) -> InstanceRef | str:
    """The record's UIDs and filter values, or why it cannot be used."""
    uids = [_text(record, tag) for tag in (_STUDY, _SERIES, _SOP)]
    if None in uids:
        missing = [name for name, uid in zip(_FIELDS, uids, strict=False) if uid is None]
        return f"a QIDO-RS record without {', '.join(missing)} (skipped)"
    study, series, sop = (str(uid) for uid in uids)
    return InstanceRef(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        modality=(_text(record, _MODALITY) or "").upper(),
        body_part=(_text(record, _BODY_PART) or "").upper() or None,
        study_date=_text(record, _STUDY_DATE),
    )


def _wanted(ref: InstanceRef, options: DicomWebOptions, modality: str) -> bool:
    """The source's filters, checked on the answer (a server may ignore them)."""
    if ref.modality and ref.modality != modality:
        return False
    if options.body_parts and ref.body_part and ref.body_part not in options.body_parts:
        return False
    return not (options.since and ref.study_date and ref.study_date < options.since)
