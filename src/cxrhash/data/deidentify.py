"""De-identification of an uploaded DICOM's header, as soon as it is read (issue #13).

Two steps, in place:

1. dicognito's :class:`~dicognito.anonymizer.Anonymizer` (a maintained implementation of
   the DICOM Basic Application Level Confidentiality Profile, PS3.15 Annex E): person
   names, patient/accession/other ids, dates and times, addresses, institutions,
   device identities and UIDs are replaced by consistent fake values.
2. Everything the decoder does not read is then deleted: only the Image Pixel, modality
   and VOI LUT attributes (group 0028), the Presentation LUT (2050) and the pixel data
   (7FE0) remain, so free text the profile leaves to the application (Patient Comments,
   descriptions, private tags) cannot reach a log, an error or an answer either.

The Patient ID is read by the caller *before* this runs, for the keyed pseudonym only
(:mod:`cxrhash.index.pseudonyms`); its value is never logged or stored.
"""

from __future__ import annotations

import pydicom
from dicognito.anonymizer import Anonymizer

#: The groups the decoder reads (:mod:`cxrhash.data.dicom`): Image Pixel, Modality and
#: VOI LUT (0028), Presentation LUT (2050), pixel data (7FE0).
DECODER_GROUPS = frozenset({0x0028, 0x2050, 0x7FE0})


def deidentify_header(ds: pydicom.Dataset) -> None:
    """De-identify ``ds`` in place: the confidentiality profile, then every element
    outside :data:`DECODER_GROUPS` removed (the file meta group keeps the transfer syntax)."""
    if not hasattr(ds, "file_meta"):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    # A fresh anonymizer per film: its fake values link nothing across uploads.
    Anonymizer().anonymize(ds)
    for tag in [t for t in ds.keys() if t.group not in DECODER_GROUPS]:
        del ds[tag]
