"""Evaluate a trained run under the two protocols (the ``cxrhash eval`` command): its
checkpoint and split (training's) scored by :mod:`cxrhash.evaluation`."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from cxrhash.config import TrainConfig
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import load_split
from cxrhash.encode import Encoded, encode_dataset
from cxrhash.evaluation.evaluate import (
    PROTOCOLS,
    ProtocolResult,
    evaluate_encoded,
    peak_memory_mb,
    write_results,
)
from cxrhash.training.checkpoint import load_model

LOG = logging.getLogger(__name__)

# query part and database part of each protocol
PROTOCOL_PARTS = {"literature": ("query", "train"), "strict": ("query", "database")}


def evaluate_run(
    checkpoint: Path,
    *,
    protocols: tuple[str, ...] = PROTOCOLS,
    data: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    random_seeds: int = 5,
    shortlist: int | None = None,
    progress: bool = True,
    out_dir: Path | None = None,
) -> tuple[list[ProtocolResult], dict[str, Any]]:
    """Encode the run's split parts and compute every SPEC §6 metric per protocol.

    Args:
        checkpoint: ``best.pt``/``last.pt`` or the run directory (``best.pt`` is used).
        protocols: any of ``literature`` and ``strict``.
        data: dataset spec overriding the one in the run's config.
        shortlist: Hamming shortlist L of the two-stage rows (default 1,000).
        out_dir: where to write ``eval.json``/``eval.md`` (default: the run directory).

    Returns:
        The per-protocol results and a dict of run facts (timings, memory, counts).
    """
    model, payload = load_model(checkpoint)
    config = TrainConfig.from_dict(payload["config"])
    run_dir = Path(payload["path"]).parent
    unknown = [p for p in protocols if p not in PROTOCOL_PARTS]
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {list(PROTOCOL_PARTS)}")
    dataset = open_dataset(data or config.data, config.image_size)
    split = load_split(run_dir / "split.json", dataset.case_ids)

    encoded: dict[str, Encoded] = {}
    t0 = time.perf_counter()
    for proto in protocols:
        for part in PROTOCOL_PARTS[proto]:
            if part in encoded:
                continue
            if len(split.get(part, [])) == 0:
                raise ValueError(f"split part {part!r} of {run_dir} is empty")
            encoded[part] = encode_dataset(
                model,
                dataset.subset(split[part]),
                batch_size=batch_size,
                num_workers=num_workers,
                progress=progress,
                desc=f"encode {part}",
            )
    n_encoded = sum(len(e.case_ids) for e in encoded.values())
    encode_seconds = time.perf_counter() - t0

    results = []
    for proto in protocols:
        q, db = PROTOCOL_PARTS[proto]
        res = evaluate_encoded(
            encoded[q],
            encoded[db],
            bits=config.bits,
            no_finding_class=config.no_finding_class,
            random_seeds=random_seeds,
            protocol=proto,
            shortlist=shortlist,
        )
        results.append(res)
    facts = {
        "checkpoint": str(payload["path"]),
        "model_id": payload["model_id"],
        "method": config.method,
        "backbone": config.backbone,
        "bits": config.bits,
        "image_size": config.image_size,
        "data": data or config.data,
        "best_epoch": payload["best"].get("epoch"),
        "encode_ms_per_image": 1e3 * encode_seconds / max(n_encoded, 1),
        "skipped": sum(len(e.skipped) for e in encoded.values()),
        "peak_memory_mb": peak_memory_mb(),
    }
    write_results(results, out_dir or run_dir, facts)
    return results, facts
