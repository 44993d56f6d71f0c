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


class Closeness(BaseModel):
    """Whether the archive holds a film close to the query (docs/closeness.md): ``close`` is
    false when the query's backbone features lie further from the archive's than its own
    films do (``mahalanobis`` > ``mahalanobis_limit``, the ``quantile``-th percentile of
    ``sample_size`` archive films); the nearest sampled film's cosine distance of the float
    hash outputs and Hamming distance are given with the archive's own limits."""

    close: bool
    message: str
    mahalanobis: float
    mahalanobis_limit: float
    cosine: float
    cosine_limit: float
    hamming: int
    hamming_limit: float
    quantile: float
    sample_size: int


class SearchResult(BaseModel):
    """``POST /api/search``; ``closeness`` is null for an index without calibration."""

    model_id: str
    k: int
    rerank: str
    predicted: dict[str, float]
    predicted_findings: list[str]
    hits: list[Hit]
    timings: Timings
    closeness: Closeness | None = None


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
