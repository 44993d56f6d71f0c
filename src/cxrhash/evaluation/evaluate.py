"""The evaluation run: learned codes beside the float upper bound, LSH and random codes.

Protocols (``docs/results.md``):

* ``literature`` — queries unseen in training, database = the training images
  (what the papers report);
* ``strict`` — queries and database both unseen and patient-disjoint from training.

Rows: the learned codes ranked by Hamming distance (ties by database order);
two-stage search (:mod:`cxrhash.index.rerank`), whose ranking is the
re-ranked shortlist of the L Hamming-nearest items followed by the rest in
Hamming order; the float upper bound; LSH on the float features; random codes.
Every code row also gives the number and share of distinct database codes, so
a collapsed model (few codes for many films) shows beside its mAP.

Model selection happens on the validation split during training; nothing here
feeds back into training.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrhash.data.labels import relevance_labels, with_no_finding_np
from cxrhash.encode import Encoded
from cxrhash.evaluation.baselines import lsh_codes, random_codes
from cxrhash.evaluation.metrics import rank_by_cosine, retrieval_metrics
from cxrhash.index.codes import distinct_count, hamming_rank
from cxrhash.index.rerank import RerankMode, default_shortlist, two_stage_rank
from cxrhash.index.shards import FLOAT_DTYPE

LOG = logging.getLogger(__name__)

PROTOCOLS = ("literature", "strict")
HEADLINE = ["mAP", "mAP@100", "nDCG@100", "ACG@100", "mAP_w", "P@10"]
ROW_HASH = "hash codes"
ROW_ASYMMETRIC = "two-stage (asymmetric re-rank)"
ROW_STORED_FLOATS = "two-stage (stored floats)"
ROW_FLOAT = "float upper bound (cosine)"
ROW_LSH = "LSH on features"
ROW_RANDOM = "random codes"
#: The two-stage rows and their re-rank modes.
TWO_STAGE_ROWS: dict[str, RerankMode] = {ROW_ASYMMETRIC: "asymmetric", ROW_STORED_FLOATS: "floats"}
DISTINCT_CODES = "distinct_codes"
DISTINCT_SHARE = "distinct_share"
#: Column titles of keys that are not metric names.
COLUMN_TITLES = {DISTINCT_SHARE: "distinct share"}


@dataclass
class ProtocolResult:
    """Metrics of one protocol: one row per code type, plus timings."""

    protocol: str
    n_query: int
    n_database: int
    shortlist: int | None = None  # L of the two-stage rows
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


def chunked_metrics(
    rank: Callable[[slice], tuple[np.ndarray, np.ndarray | None]],
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    ks: tuple[int, ...],
    chunk_cells: int = 20_000_000,
) -> dict[str, float]:
    """Mean metrics over queries, ranking a chunk of queries at a time (bounded memory)."""
    n_q, n_db = len(q_labels), len(db_labels)
    step = max(1, chunk_cells // max(n_db, 1))
    sums: dict[str, float] = {}
    for start in range(0, n_q, step):
        sl = slice(start, min(n_q, start + step))
        order, dist = rank(sl)
        m = retrieval_metrics(order, q_labels[sl], db_labels, ks=ks, distances=dist)
        n = sl.stop - sl.start
        for key, value in m.items():
            if isinstance(value, (int, float)):
                sums[key] = sums.get(key, 0.0) + float(value) * n
    return {k: v / n_q for k, v in sums.items()}


def code_metrics(
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    ks: tuple[int, ...],
) -> dict[str, float]:
    """Metrics of a Hamming ranking (ties by database order) of packed codes, with the
    number and share of distinct database codes."""

    def rank(sl: slice) -> tuple[np.ndarray, np.ndarray | None]:
        return hamming_rank(q_codes[sl], db_codes, None)

    return {**chunked_metrics(rank, q_labels, db_labels, ks), **distinct_stats(db_codes)}


def distinct_stats(db_codes: np.ndarray) -> dict[str, float]:
    """``distinct_codes`` (distinct database codes) and ``distinct_share`` (that / N)."""
    n = distinct_count(db_codes)
    return {DISTINCT_CODES: n, DISTINCT_SHARE: n / max(len(db_codes), 1)}


def two_stage_metrics(
    query: Encoded,
    database: Encoded,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    ks: tuple[int, ...],
    *,
    mode: RerankMode,
    shortlist: int,
) -> dict[str, float]:
    """Metrics of the two-stage ranking (:func:`cxrhash.index.rerank.two_stage_rank`).

    ``floats`` uses the database outputs rounded to float16, as the index stores them.
    """
    bits = query.hashes.shape[1]
    q_codes, db_codes = query.codes, database.codes
    db_floats = database.hashes.astype(FLOAT_DTYPE) if mode == "floats" else None

    def rank(sl: slice) -> tuple[np.ndarray, np.ndarray | None]:
        return two_stage_rank(
            q_codes[sl],
            query.hashes[sl],
            db_codes,
            bits,
            mode=mode,
            shortlist=shortlist,
            db_floats=db_floats,
        )

    return chunked_metrics(rank, q_labels, db_labels, ks)


def evaluate_encoded(
    query: Encoded,
    database: Encoded,
    *,
    bits: int,
    no_finding_class: bool = True,
    ks: tuple[int, ...] = (10, 100),
    random_seeds: int = 5,
    protocol: str = "",
    shortlist: int | None = None,
) -> ProtocolResult:
    """Compare learned codes (alone and with a two-stage re-rank) with the float upper
    bound, LSH and random codes.

    ``shortlist`` is the L of the two-stage rows (default
    :func:`~cxrhash.index.rerank.default_shortlist` of the largest cut-off: 1,000 for ks
    up to 100).
    """
    q_lab = relevance_labels(with_no_finding_np(query.labels, no_finding_class))
    db_lab = relevance_labels(with_no_finding_np(database.labels, no_finding_class))
    length = default_shortlist(max(ks)) if shortlist is None else shortlist
    result = ProtocolResult(protocol, len(q_lab), len(db_lab), shortlist=length)

    t0 = time.perf_counter()
    result.rows[ROW_HASH] = code_metrics(query.codes, database.codes, q_lab, db_lab, ks)
    result.timing["hash_rank_ms_per_query"] = 1e3 * (time.perf_counter() - t0) / len(q_lab)

    for row, mode in TWO_STAGE_ROWS.items():
        t0 = time.perf_counter()
        metrics = two_stage_metrics(query, database, q_lab, db_lab, ks, mode=mode, shortlist=length)
        if mode == "asymmetric":  # it ranks by the database codes alone
            metrics.update(distinct_stats(database.codes))
        result.rows[row] = metrics
        result.timing[f"{mode}_rank_ms_per_query"] = 1e3 * (time.perf_counter() - t0) / len(q_lab)

    def cosine_rank(sl: slice) -> tuple[np.ndarray, np.ndarray | None]:
        return rank_by_cosine(query.features[sl], database.features), None

    t0 = time.perf_counter()
    result.rows[ROW_FLOAT] = chunked_metrics(cosine_rank, q_lab, db_lab, ks)
    result.timing["float_rank_ms_per_query"] = 1e3 * (time.perf_counter() - t0) / len(q_lab)

    lsh_db, lsh_q = lsh_codes(database.features, query.features, bits)
    result.rows[ROW_LSH] = code_metrics(lsh_q, lsh_db, q_lab, db_lab, ks)

    runs = [
        code_metrics(
            random_codes(len(q_lab), bits, 1000 + s),
            random_codes(len(db_lab), bits, 2000 + s),
            q_lab,
            db_lab,
            ks,
        )
        for s in range(random_seeds)
    ]
    mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    std = {f"{k}_std": float(np.std([r[k] for r in runs])) for k in runs[0]}
    result.rows[ROW_RANDOM] = {**mean, **std}
    return result


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and waited-for children) in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def with_distinct_share(columns: list[str]) -> list[str]:
    """``columns`` with the distinct-code share right after ``mAP`` (or first)."""
    cols = [c for c in columns if c != DISTINCT_SHARE]
    at = cols.index("mAP") + 1 if "mAP" in cols else 0
    return [*cols[:at], DISTINCT_SHARE, *cols[at:]]


def format_value(row: dict[str, float], key: str, sep: str = " ± ") -> str:
    """A table cell: the value at 4 decimals, ``± std`` when a nonzero one is recorded,
    ``–`` when absent; the share of distinct codes also gives their number in brackets."""
    v = row.get(key)
    if v is None:
        return "–"
    sd = row.get(f"{key}_std")
    text = f"{v:.4f}" + (f"{sep}{sd:.4f}" if sd else "")
    count = row.get(DISTINCT_CODES) if key == DISTINCT_SHARE else None
    return text + (f" ({round(count, 1):g})" if count is not None else "")


def format_table(results: list[ProtocolResult], columns: list[str] | None = None) -> str:
    """A Markdown table (one row per protocol × code type), the distinct-code share beside mAP."""
    cols = columns or with_distinct_share(HEADLINE)
    titles = [COLUMN_TITLES.get(c, c) for c in cols]
    lines = [
        "| protocol | codes | " + " | ".join(titles) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for res in results:
        for name, row in res.rows.items():
            cells = [format_value(row, c) for c in cols]
            lines.append(f"| {res.protocol} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_to_json(results: list[ProtocolResult], extra: dict[str, Any]) -> str:
    """JSON with every metric of every row, timings and run facts."""
    return json.dumps(
        {
            **extra,
            "protocols": {
                r.protocol: {
                    "n_query": r.n_query,
                    "n_database": r.n_database,
                    "shortlist": r.shortlist,
                    "rows": r.rows,
                    "timing": r.timing,
                }
                for r in results
            },
        },
        indent=2,
    )


def write_results(results: list[ProtocolResult], out_dir: Path, extra: dict[str, Any]) -> None:
    """Write ``eval.json`` and ``eval.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(results_to_json(results, extra))
    (out_dir / "eval.md").write_text(format_table(results) + "\n")
