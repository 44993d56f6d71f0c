"""The JSON bodies of the API, as Pydantic models (so the OpenAPI schema documents them)."""

from __future__ import annotations

from pydantic import BaseModel


class Health(BaseModel):
    """``GET /api/health``."""

    status: str


class Stats(BaseModel):
    """``GET /api/stats``: the index and the model it was made with."""

    size: int
    bits: int
    backend: str
    shards: int
    stores_floats: bool
    keeps_source_names: bool
    model_id: str
    image_size: int
    label_names: list[str]


class Hit(BaseModel):
    """One neighbour of the query, best first (rank 0)."""

    rank: int
    case_id: str
    distance: int
    score: float | None
    findings: list[str]
    shared_findings: list[str]


class Timings(BaseModel):
    """Milliseconds spent on each stage of a search."""

    decode_ms: float
    encode_ms: float
    search_ms: float


class SearchResult(BaseModel):
    """``POST /api/search``."""

    model_id: str
    k: int
    rerank: str
    predicted: dict[str, float]
    predicted_findings: list[str]
    hits: list[Hit]
    timings: Timings


class Case(BaseModel):
    """``GET /api/cases/{case_id}``; ``source_path`` only from an index keeping source names."""

    case_id: str
    findings: list[str]
    source_path: str | None = None


class ErrorDetail(BaseModel):
    """What went wrong: a stable ``code`` and a sentence."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer."""

    error: ErrorDetail
