"""A DICOMweb data source (issue #14): chest radiographs listed with QIDO-RS, fetched with
WADO-RS through ``dicomweb-client`` and decoded by the project's one DICOM decode path,
keyed by SOP Instance UID; nothing identifying a patient is kept."""

from cxrhash.data.dicomweb.fetch import FetchedFilm, fetch_film
from cxrhash.data.dicomweb.listing import InstanceRef, list_instances
from cxrhash.data.dicomweb.options import DicomWebOptions, parse_dicomweb_spec
from cxrhash.data.dicomweb.session import make_client, make_session
from cxrhash.data.dicomweb.source import DicomWebSource
from cxrhash.data.errors import DicomWebError, InstanceError

__all__ = [
    "DicomWebError",
    "DicomWebOptions",
    "DicomWebSource",
    "FetchedFilm",
    "InstanceError",
    "InstanceRef",
    "fetch_film",
    "list_instances",
    "make_client",
    "make_session",
    "parse_dicomweb_spec",
]
