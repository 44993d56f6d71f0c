"""Incremental indexing of a PACS: the cursor ``cxrhash index --data dicomweb:…`` keeps.

DICOMweb has no "added since" query, so the cursor is a Study Date: after an index run over
a source completes, the index folder records (in ``dicomweb-cursor.json``) the day before
the run started, and the next run over the same server and filters lists only studies from
that date on (``StudyDate=YYYYMMDD-``). The day before, because Study Date is the
acquisition site's local date. What the listing returns that the index holds already is
skipped by its SOP Instance UID, so nothing is indexed twice; a run that is interrupted
(even by ``kill -9``) writes no cursor, so the next one lists the same window again and
indexes what the interrupted one had not committed. A study stored in the PACS later with
an older Study Date (a prior imported from elsewhere) is outside the window: give
``since=`` in the spec to list from an earlier date (an explicit ``since`` always wins).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cxrhash.data.dicomweb.options import DicomWebOptions, parse_dicomweb_spec
from cxrhash.index.durable import write_json_atomic

LOG = logging.getLogger(__name__)
CURSOR_NAME = "dicomweb-cursor.json"
#: Largest cursor file read (a few sources; anything bigger is not ours).
_MAX_BYTES = 1 << 20
_DATE = re.compile(r"^[0-9]{8}$")


def source_key(options: DicomWebOptions) -> str:
    """What a cursor belongs to: the server and the filters that decide what is listed."""
    return "|".join([options.url, ",".join(options.modalities), ",".join(options.body_parts)])


def with_cursor(spec: str, index_dir: Path) -> str:
    """``spec`` with ``since`` from the index's cursor for this source, when the spec gives
    no ``since`` of its own and the index has a cursor for it; else ``spec`` unchanged."""
    options = parse_dicomweb_spec(spec)
    if options.since is not None:
        return spec
    since = _read(index_dir).get(source_key(options), {}).get("since")
    if since is None:
        return spec
    LOG.info("DICOMweb %s: listing studies from %s on (the index's cursor)", options.url, since)
    return f"{spec}{'&' if '?' in spec else '?'}since={since}"


def save_cursor(index_dir: Path, spec: str, started: datetime) -> str:
    """Record that an index run over ``spec``'s source, started at ``started``, completed;
    returns the Study Date the next run lists from."""
    options = parse_dicomweb_spec(spec)
    since = (started - timedelta(days=1)).strftime("%Y%m%d")
    cursors = _read(index_dir)
    cursors[source_key(options)] = {"since": since, "completed": datetime.now().isoformat()}
    write_json_atomic(index_dir / CURSOR_NAME, {"format": 1, "sources": cursors})
    return since


def _read(index_dir: Path) -> dict[str, dict[str, Any]]:
    """The index's cursors by source; none when the file is absent, and none (logged) when it
    is not one this code wrote (read as hostile input: size, JSON, keys, dates)."""
    path = index_dir / CURSOR_NAME
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise ValueError("too large")
        data = json.loads(path.read_text(encoding="utf-8"))
        sources = data["sources"] if data.get("format") == 1 else None
        if not isinstance(sources, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("since"), str) and _DATE.match(v["since"])
            for v in sources.values()
        ):
            raise ValueError("not a cursor file")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
        LOG.warning("%s is unusable (%s): listing everything again", path, type(err).__name__)
        return {}
    return sources
