"""The JSON bodies of the API, as Pydantic models (so the OpenAPI schema documents them)."""

from __future__ import annotations

from pydantic import BaseModel, Field

#: What a case id may be: a pseudonym (``c-`` + hex) or a source name without a path.
CASE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
CASE_ID_MAX = 128


class Health(BaseModel):
    """``GET /api/health``."""

    status: str


class EngineInfo(BaseModel):
    """What encodes the uploaded films (``cxrhash serve --engine``)."""

    name: str = Field(description="'torch' (PyTorch) or 'onnx' (ONNX Runtime)")
    threads: int | None = Field(
        default=None,
        description="ONNX Runtime's intra-op threads; null: its default (one per core), or PyTorch",
    )
    onnx_file: str | None = Field(
        default=None, description="the ONNX graph's file name (no directory); null for PyTorch"
    )


class Stats(BaseModel):
    """``GET /api/stats``: the index, the model it was made with and the engine encoding."""

    size: int
    bits: int
    backend: str
    shards: int
    stores_floats: bool
    keeps_source_names: bool
    serves_images: bool = Field(description="whether cases have films (GET .../image)")
    model_id: str
    image_size: int
    label_names: list[str]
    engine: EngineInfo


class PacsRef(BaseModel):
    """Where a case indexed from a PACS lives there: its UIDs and WADO-RS URL."""

    study_uid: str
    series_uid: str
    sop_uid: str
    wado_url: str | None = Field(description="null when the server does not know the PACS URL")


class Hit(BaseModel):
    """One neighbour of the query, best first (rank 0)."""

    rank: int
    case_id: str
    distance: int
    score: float | None
    findings: list[str]
    shared_findings: list[str]
    thumbnail_url: str | None = Field(
        description="GET this for the case's film (PNG); null when the server has no films"
    )
    pacs: PacsRef | None = Field(
        default=None, description="the original instance, for a case indexed over DICOMweb"
    )


class QueryImage(BaseModel):
    """The uploaded film for display: ``pixels`` is base64 of little-endian uint16 grey
    values, row-major, ``height`` × ``width`` (longest side at most 512), linear in the
    file's values; the window (centre, width) in the same 0–65535 scale is the file's
    default (a DICOM's window, else the full range)."""

    width: int
    height: int
    pixels: str
    window_center: float
    window_width: float
    inverted: bool = Field(description="high values display dark (MONOCHROME1)")
    dicom: bool


class HeatMap(BaseModel):
    """Where the network looked, over the film as the network saw it (the centre square):
    ``values`` are ``height`` rows of ``width`` numbers in [0, 1]."""

    kind: str
    width: int
    height: int
    values: list[list[float]]


class Timings(BaseModel):
    """Milliseconds spent on each stage of a search."""

    decode_ms: float
    encode_ms: float
    search_ms: float


class Closeness(BaseModel):
    """Whether the archive holds a film close to the query (docs/closeness.md): ``close`` is
    false when the query's backbone features or its pixel statistics lie further from the
    archive's than its own films do (``mahalanobis`` > ``mahalanobis_limit`` or
    ``pixel_distance`` > ``pixel_limit``, each the ``quantile``-th percentile of
    ``sample_size`` archive films); the nearest sampled film's cosine distance of the float
    hash outputs and Hamming distance are given with the archive's own limits."""

    close: bool
    message: str
    mahalanobis: float
    mahalanobis_limit: float
    pixel_distance: float
    pixel_limit: float
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
    finding_filter: list[str] = Field(description="hits must have every one of these")
    searched: int = Field(description="how many nearest cases the filter was applied to")
    hits: list[Hit]
    query: QueryImage | None = Field(description="null when preview=false")
    heatmap: HeatMap | None
    timings: Timings
    closeness: Closeness | None = None


class Case(BaseModel):
    """``GET /api/cases/{case_id}``; ``source_path`` is a file only from an index keeping
    source names, and the instance's WADO-RS URL for a case indexed over DICOMweb."""

    case_id: str
    findings: list[str]
    source_path: str | None = None
    pacs: PacsRef | None = None


class ErrorDetail(BaseModel):
    """What went wrong: a stable ``code`` and a sentence."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer."""

    error: ErrorDetail
