"""The evaluation run: learned codes beside the float upper bound, LSH and random codes.

Protocols (``docs/results.md``):

* ``literature`` — queries unseen in training, database = the training images
  (what the papers report);
* ``strict`` — queries and database both unseen and patient-disjoint from training.

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

from cxrhash.encode import Encoded
from cxrhash.evaluation.baselines import lsh_codes, random_codes
from cxrhash.evaluation.metrics import rank_by_cosine, retrieval_metrics
from cxrhash.index.codes import hamming_rank
from cxrhash.training.targets import relevance_labels, with_no_finding_np

LOG = logging.getLogger(__name__)

PROTOCOLS = ("literature", "strict")
HEADLINE = ["mAP", "mAP@100", "nDCG@100", "ACG@100", "mAP_w", "P@10"]
ROW_HASH = "hash codes"
ROW_FLOAT = "float upper bound (cosine)"
ROW_LSH = "LSH on features"
ROW_RANDOM = "random codes"


@dataclass
class ProtocolResult:
    """Metrics of one protocol: one row per code type, plus timings."""

    protocol: str
    n_query: int
    n_database: int
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
    """Metrics of a Hamming ranking (ties by database order) of packed codes."""

    def rank(sl: slice) -> tuple[np.ndarray, np.ndarray | None]:
        return hamming_rank(q_codes[sl], db_codes, None)

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
) -> ProtocolResult:
    """Compare learned codes with the float upper bound, LSH and random codes."""
    q_lab = relevance_labels(with_no_finding_np(query.labels, no_finding_class))
    db_lab = relevance_labels(with_no_finding_np(database.labels, no_finding_class))
    result = ProtocolResult(protocol, len(q_lab), len(db_lab))

    t0 = time.perf_counter()
    result.rows[ROW_HASH] = code_metrics(query.codes, database.codes, q_lab, db_lab, ks)
    result.timing["hash_rank_ms_per_query"] = 1e3 * (time.perf_counter() - t0) / len(q_lab)

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


def format_table(results: list[ProtocolResult], columns: list[str] | None = None) -> str:
    """A Markdown table (one row per protocol × code type)."""
    cols = columns or HEADLINE
    lines = [
        "| protocol | codes | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for res in results:
        for name, row in res.rows.items():
            cells = []
            for c in cols:
                v = row.get(c)
                sd = row.get(f"{c}_std")
                cells.append("–" if v is None else f"{v:.4f}" + (f" ± {sd:.4f}" if sd else ""))
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
