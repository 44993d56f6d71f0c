"""Fetch one instance with WADO-RS and decode it through the project's one DICOM decode path
(:func:`cxrhash.data.dicom.read_dicom_dataset`), in memory: the raw header, patient names
and all, is never written to disk, and only the pixels and the UIDs leave this module.

Any failure of one instance is an :class:`~cxrhash.data.errors.InstanceError` naming its
SOP Instance UID; only a refusal of the credentials stops a run (every later instance
would be refused too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import requests
from dicomweb_client import DICOMwebClient

from cxrhash.data.dicom import read_dicom_dataset
from cxrhash.data.dicomweb.errors import AUTH_STATUSES, describe, http_status, server_error
from cxrhash.data.dicomweb.listing import InstanceRef
from cxrhash.data.errors import ImageReadError, InstanceError

#: The stored transfer syntax, whatever it is: pydicom's handlers decode the usual ones.
#: (dicomweb-client 0.61 takes exactly one media type for a retrieve, so a list of
#: syntaxes that would leave out deflate cannot be asked for.)
MEDIA_TYPES = (("application/dicom", "*"),)


@dataclass(frozen=True)
class FetchedFilm:
    """A decoded instance: its UIDs and pixels (as :func:`cxrhash.data.read_dicom` returns
    them: float32 ``H×W`` in [0, 1], 1 the brightest)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    pixels: np.ndarray


def fetch_film(client: DICOMwebClient, ref: InstanceRef, url: str) -> FetchedFilm:
    """Retrieve ``ref`` with WADO-RS and decode it; ``url`` names the server in errors.

    Raises:
        InstanceError: This instance could not be retrieved or decoded (the reason says
            which); the caller goes on with the next.
        DicomWebError: The server refused the credentials.
    """
    try:
        ds = client.retrieve_instance(
            ref.study_uid, ref.series_uid, ref.sop_uid, media_types=MEDIA_TYPES
        )
    except requests.RequestException as err:
        if http_status(err) in AUTH_STATUSES:
            raise server_error(url, err, f"retrieving {ref.sop_uid}") from None
        raise InstanceError(ref.sop_uid, f"WADO-RS retrieve failed: {describe(err)}") from None
    except Exception as err:  # the client's parsing of a hostile multipart answer
        raise InstanceError(
            ref.sop_uid, f"WADO-RS answer is not a DICOM instance ({type(err).__name__})"
        ) from None
    got = str(getattr(ds, "SOPInstanceUID", "") or "")
    if got != ref.sop_uid:
        raise InstanceError(ref.sop_uid, "WADO-RS answered with another instance")
    try:
        pixels = read_dicom_dataset(ds, f"dicomweb-instance-{ref.sop_uid}")
    except ImageReadError as err:
        raise InstanceError(ref.sop_uid, err.reason) from None
    return FetchedFilm(ref.study_uid, ref.series_uid, ref.sop_uid, pixels)
