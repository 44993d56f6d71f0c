"""What the CSV readers share: a label row and its cells, the finding columns, missing images."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cxrhash.data.errors import DataFormatError
from cxrhash.data.labels import NIH_PATHOLOGIES, NO_FINDING, normalize_label

LOG = logging.getLogger(__name__)

ON_MISSING = ("error", "skip")
MISSING_SHOWN = 5

Pathologies = list[str] | str | None


@dataclass
class LabelRow:
    """One row of a label CSV: its location for messages, image, findings and patient."""

    where: str
    image: str
    findings: str
    patient: str


def cell(row: dict[str, str], column: str, where: str) -> str:
    """The stripped, non-empty value of ``column``.

    Raises:
        DataFormatError: The cell is empty.
    """
    value = (row.get(column) or "").strip()
    if not value:
        raise DataFormatError(f"{where}: empty {column!r} cell; expected a value")
    return value


def _found_labels(texts: list[str], sep: str = "|") -> list[str]:
    names = {normalize_label(t) for text in texts for t in text.split(sep) if t.strip()}
    return sorted(names - {NO_FINDING})


def resolve_pathologies(pathologies: Pathologies, texts: list[str], sep: str = "|") -> list[str]:
    """The label columns: NIH's 14 for ``None``, the findings in ``texts`` for ``"auto"``,
    else the given names in torchxrayvision spelling."""
    if pathologies is None:
        return list(NIH_PATHOLOGIES)
    if isinstance(pathologies, str):
        if pathologies != "auto":
            raise ValueError(f"pathologies must be a list, None or 'auto', got {pathologies!r}")
        return _found_labels(texts, sep)
    return [normalize_label(p) for p in pathologies]


def require_nonempty(n: int, source: str) -> None:
    """Raise :class:`DataFormatError` when filtering left no item of ``source``."""
    if n == 0:
        raise DataFormatError(f"{source}: no items left after filtering; expected at least one")


def check_on_missing(on_missing: str) -> None:
    """Raise ``ValueError`` unless ``on_missing`` is one of :data:`ON_MISSING`."""
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")


def handle_missing(missing: list[str], on_missing: str, source: str, looked_in: str) -> None:
    """Refuse (``"error"``) or warn about (``"skip"``) rows whose image file is absent."""
    if not missing:
        return
    if on_missing == "error":
        raise DataFormatError(
            f"{source}: {len(missing)} image file(s) not found, e.g. {missing[:MISSING_SHOWN]}; "
            f"looked in {looked_in} (pass on_missing='skip' to drop them)"
        )
    LOG.warning("%s: %d image file(s) not found; dropping them", source, len(missing))
