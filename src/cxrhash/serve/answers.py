"""The JSON answer of ``POST /api/search``: hits (filtered by finding), the query's preview
and heat-map, its predicted findings and the timings."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import torch
from torch.nn import functional as F

from cxrhash.data.uploads import Preview
from cxrhash.index.pacs_links import parse_link
from cxrhash.retrieve import DecodedSearch
from cxrhash.serve.schemas import (
    Closeness,
    HeatMap,
    Hit,
    PacsRef,
    QueryImage,
    SearchResult,
    Timings,
)

#: A predicted finding is one whose probability reaches this.
PREDICTED_AT = 0.5
#: The heat-map's longest side in the answer (the viewer upscales it).
HEATMAP_SIDE = 64


@dataclass
class SearchRequest:
    """What the client asked for."""

    k: int
    rerank: str
    findings: list[str]
    preview: bool


def search_depth(k: int, findings: list[str], size: int) -> int:
    """How many nearest cases to fetch: ``k``, or with a finding filter enough that ``k``
    usually survive it (20 × k, at least 200), never more than the index holds."""
    if not findings:
        return k
    return max(k, min(size, max(20 * k, 200)))


def query_image(preview: Preview) -> QueryImage:
    """The preview as base64 little-endian uint16."""
    height, width = preview.pixels.shape
    raw = np.ascontiguousarray(preview.pixels, dtype="<u2").tobytes()
    return QueryImage(
        width=width,
        height=height,
        pixels=base64.b64encode(raw).decode("ascii"),
        window_center=preview.window_center,
        window_width=preview.window_width,
        inverted=preview.inverted,
        dicom=preview.dicom,
    )


def heat_map(found: DecodedSearch, kind: str) -> HeatMap | None:
    """Query 0's heat-map scaled to [0, 1] and at most :data:`HEATMAP_SIDE` a side."""
    if found.maps is None:
        return None
    hm = found.maps[0:1].float()
    if max(hm.shape[-2:]) > HEATMAP_SIDE:
        hm = F.adaptive_avg_pool2d(hm, HEATMAP_SIDE)
    values = hm[0, 0]
    low, high = float(values.min()), float(values.max())
    values = (values - low) / (high - low) if high > low else torch.zeros_like(values)
    rows = np.round(values.numpy().astype(np.float64), 3).tolist()
    return HeatMap(kind=kind, width=values.shape[1], height=values.shape[0], values=rows)


def search_result(
    found: DecodedSearch,
    request: SearchRequest,
    *,
    model_id: str,
    label_names: list[str],
    preview: Preview,
    searched: int,
    thumbnails: bool,
    decode_s: float,
) -> SearchResult:
    """The answer for query 0 of ``found``: its first ``k`` hits having every finding of
    the filter, ranks counted after filtering."""
    predicted = found.predicted(0, label_names)
    positive = [n for n, p in predicted.items() if p >= PREDICTED_AT]
    wanted = set(request.findings)
    hits: list[Hit] = []
    for h in found.hits[0]:
        findings = finding_names(h.findings)
        if not wanted.issubset(findings):
            continue
        hits.append(
            Hit(
                rank=len(hits),
                case_id=h.case_id,
                distance=h.distance,
                score=h.score,
                findings=findings,
                shared_findings=[f for f in findings if f in positive],
                thumbnail_url=f"/api/cases/{quote(h.case_id, safe='')}/image"
                if thumbnails
                else None,
                pacs=pacs_ref(h.source_path),
            )
        )
        if len(hits) == request.k:
            break
    timings = Timings(
        decode_ms=1000 * decode_s,
        encode_ms=1000 * found.encode_seconds,
        search_ms=1000 * found.search_seconds,
    )
    return SearchResult(
        model_id=model_id,
        k=request.k,
        rerank=request.rerank,
        predicted=predicted,
        predicted_findings=positive,
        finding_filter=request.findings,
        searched=searched,
        hits=hits,
        query=query_image(preview) if request.preview else None,
        heatmap=heat_map(found, "attention"),
        timings=timings,
        closeness=_closeness(found),
    )


def finding_names(text: str) -> list[str]:
    """The findings of a stored ``A|B`` text; none for a film stored without a report
    (``""``: pushed by a PACS, :mod:`.stow`)."""
    return text.split("|") if text else []


def pacs_ref(source_path: str | None) -> PacsRef | None:
    """The PACS location of a case whose stored source is a WADO-RS URL, else ``None``."""
    link = parse_link(source_path)
    return None if link is None else PacsRef.model_validate(link.as_dict())


def _closeness(found: DecodedSearch) -> Closeness | None:
    """Query 0's closeness to the archive, ``None`` when unknown (no calibration)."""
    assessed = found.closeness[0] if found.closeness else None
    return None if assessed is None else Closeness.model_validate(assessed.as_dict())
