"""A ``dicomweb:URL[?...]`` data source: its options, its client, its listing and its films."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from cxrhash.data.dicomweb.fetch import FetchedFilm, fetch_film
from cxrhash.data.dicomweb.listing import InstanceRef, list_instances
from cxrhash.data.dicomweb.options import DicomWebOptions, parse_dicomweb_spec
from cxrhash.data.dicomweb.session import make_client
from cxrhash.data.errors import InstanceError

LOG = logging.getLogger(__name__)


class DicomWebSource:
    """The chest radiographs of a DICOMweb server (QIDO-RS to list, WADO-RS to fetch).

    Args:
        spec: ``dicomweb:URL[?key=value&...]`` (see :func:`parse_dicomweb_spec`), or
            options already parsed.
    """

    def __init__(self, spec: str | DicomWebOptions) -> None:
        self.options = spec if isinstance(spec, DicomWebOptions) else parse_dicomweb_spec(spec)
        self.client = make_client(self.options)

    @property
    def url(self) -> str:
        return self.options.url

    def instances(self, on_skip: Callable[[str], None] | None = None) -> Iterator[InstanceRef]:
        """Every instance the filters keep (see :func:`list_instances`)."""
        return list_instances(self.client, self.options, on_skip)

    def fetch(self, ref: InstanceRef) -> FetchedFilm:
        """One instance, decoded (see :func:`fetch_film`)."""
        return fetch_film(self.client, ref, self.options.url)

    def films(
        self, refs: Iterable[InstanceRef] | None = None
    ) -> Iterator[FetchedFilm | InstanceError]:
        """Each instance (of ``refs``, else of the listing) decoded, or why it was not.

        An instance that cannot be fetched or decoded is yielded as its
        :class:`InstanceError` (and logged with its UID and reason); the run goes on.
        """
        for ref in self.instances() if refs is None else refs:
            try:
                yield self.fetch(ref)
            except InstanceError as err:
                LOG.warning("skipped %s", err)
                yield err
