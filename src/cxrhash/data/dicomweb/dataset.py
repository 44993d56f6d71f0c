"""A DICOMweb source as a :class:`~cxrhash.data.dataset.CXRDataset`: listed once with
QIDO-RS, each film fetched with WADO-RS when it is read (so ``DataLoader`` workers are
parallel fetchers), keyed by its SOP Instance UID.

Each item's path is its instance's WADO-RS URL (``{url}/studies/…/series/…/instances/…``):
it names no patient, an index keeps it as the link back to the PACS, and the reader
fetches by it. Findings come from ``labels=CSV`` (columns ``SOPInstanceUID`` and ``Finding
Labels``, NIH style, and optionally ``Patient ID``); without it the films have no findings
(all unknown), which ``cxrhash index`` stores as none. The patient of a film is the CSV's
``Patient ID``, else its study (the listing keeps nothing on the patient).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from dicomweb_client import DICOMwebClient

from cxrhash.data.dataset import CXRDataset
from cxrhash.data.dicomweb.fetch import fetch_film
from cxrhash.data.dicomweb.listing import InstanceRef
from cxrhash.data.dicomweb.options import DicomWebOptions, parse_dicomweb_spec
from cxrhash.data.dicomweb.session import make_client
from cxrhash.data.dicomweb.source import DicomWebSource
from cxrhash.data.errors import DataFormatError, ImageReadError, InstanceError
from cxrhash.data.label_files import iter_csv
from cxrhash.data.labels import parse_finding_labels
from cxrhash.data.readers.label_rows import cell, require_nonempty, resolve_pathologies

LOG = logging.getLogger(__name__)
UID_COLUMN, FINDINGS_COLUMN, PATIENT_COLUMN = "SOPInstanceUID", "Finding Labels", "Patient ID"


def wado_url(base: str, ref: InstanceRef) -> str:
    """The WADO-RS URL of a listed instance."""
    return f"{base}/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_uid}"


def ref_of(url: str) -> InstanceRef:
    """The instance a :func:`wado_url` names (only its UIDs: what a fetch needs)."""
    head, _, sop = url.rpartition("/instances/")
    head, _, series = head.rpartition("/series/")
    _, _, study = head.rpartition("/studies/")
    if not (study and series and sop):
        raise ImageReadError(url, "not a WADO-RS instance URL")
    return InstanceRef(study, series, sop, modality="", body_part=None, study_date=None)


class WadoReader:
    """Reads an item by its WADO-RS URL: a picklable callable for ``CXRDataset(reader=...)``
    whose HTTP client is made in the process that first reads (each ``DataLoader``
    worker has its own session)."""

    def __init__(self, options: DicomWebOptions) -> None:
        self.options = options
        self._client: DICOMwebClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "_client": None}

    def __call__(self, url: str) -> np.ndarray:
        ref = ref_of(url)
        if self._client is None:
            self._client = make_client(self.options)
        try:
            return fetch_film(self._client, ref, self.options.url).pixels
        except InstanceError as err:
            raise ImageReadError(url, err.reason) from None


def open_dicomweb(spec: str, image_size: int) -> CXRDataset:
    """The chest films a ``dicomweb:URL[?...]`` spec lists (see the module's docstring).

    Raises:
        DataFormatError: a bad spec or labels CSV, or no film left to use.
        DicomWebError: the server cannot be listed.
    """
    options = parse_dicomweb_spec(spec)
    refs = list({r.sop_uid: r for r in DicomWebSource(options).instances()}.values())
    LOG.info("DICOMweb %s: %d chest instances listed", options.url, len(refs))
    if options.labels is None:
        labels = np.full((len(refs), 0), np.nan, dtype=np.float32)
        pathologies: list[str] = []
        patients = [r.study_uid for r in refs]
    else:
        refs, labels, pathologies, patients = _labelled(refs, Path(options.labels))
    require_nonempty(len(refs), f"{options.url} (modalities {','.join(options.modalities)})")
    return CXRDataset(
        case_ids=[r.sop_uid for r in refs],
        patient_ids=patients,
        labels=labels,
        pathologies=pathologies,
        paths=[wado_url(options.url, r) for r in refs],
        image_size=image_size,
        name=f"dicomweb:{options.url}",
        reader=WadoReader(options),
    )


def _labelled(
    refs: list[InstanceRef], csv_path: Path
) -> tuple[list[InstanceRef], np.ndarray, list[str], list[str]]:
    """The listed instances the CSV has findings for, with their labels and patients."""
    rows: dict[str, tuple[str, str, str]] = {}
    for where, row in iter_csv(csv_path, (UID_COLUMN, FINDINGS_COLUMN)):
        uid = cell(row, UID_COLUMN, where)
        if uid in rows:
            raise DataFormatError(f"{where}: SOPInstanceUID {uid} appears twice in {csv_path}")
        rows[uid] = (where, (row.get(FINDINGS_COLUMN) or "").strip(), row.get(PATIENT_COLUMN, ""))
    kept = [r for r in refs if r.sop_uid in rows]
    if len(kept) < len(refs):
        LOG.warning(
            "%s: %d listed instances have no row (left out); %d rows name no listed instance",
            csv_path,
            len(refs) - len(kept),
            len(rows) - len(kept),
        )
    names = resolve_pathologies("auto", [rows[r.sop_uid][1] for r in kept])
    labels = [parse_finding_labels(rows[r.sop_uid][1], names, rows[r.sop_uid][0]) for r in kept]
    patients = [(rows[r.sop_uid][2] or "").strip() or r.study_uid for r in kept]
    stacked = np.stack(labels) if labels else np.zeros((0, len(names)), dtype=np.float32)
    return kept, stacked, names, patients
