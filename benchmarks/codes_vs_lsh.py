"""Codes against LSH of the same network's features, query by query, with a standard error.

For each trained run: encode its strict query and database films (``split.json``), rank
every query by the run's codes and by FAISS LSH of its float features (the evaluation's
"LSH on features" row, same bits), and report the mean per-query AP difference with its
standard error over queries and how many queries each side wins. A bench's per-seed
difference of two means hides how much of it ≈ 150 queries can resolve; this says.

    python benchmarks/codes_vs_lsh.py runs/bench/phantom-cpu128/runs/deep-attention-fusion-64b-s*
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cxrhash.data.labels import relevance_labels, with_no_finding_np
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import load_split
from cxrhash.encode import encode_dataset
from cxrhash.evaluation.baselines import lsh_codes
from cxrhash.evaluation.metrics import retrieval_metrics
from cxrhash.index.codes import hamming_rank
from cxrhash.training.checkpoint import load_model


def per_query_ap(
    q_codes: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray
) -> np.ndarray:
    """AP of each query ranked by Hamming distance of packed codes (ties by database order,
    as the evaluation ranks them)."""
    order, dist = hamming_rank(q_codes, db_codes, None)
    return np.array(
        [
            retrieval_metrics(
                order[i : i + 1],
                q_labels[i : i + 1],
                db_labels,
                distances=None if dist is None else dist[i : i + 1],
            )["mAP"]
            for i in range(len(q_labels))
        ]
    )


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean of a − b, its standard error (sample std / √n), and the queries each side wins."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        raise ValueError(f"a standard error needs ≥ 2 paired values, got {d.size}")
    return {
        "mean": float(d.mean()),
        "se": float(d.std(ddof=1) / np.sqrt(d.size)),
        "ahead": int((d > 0).sum()),
        "behind": int((d < 0).sum()),
        "n": int(d.size),
    }


def compare_run(run: Path) -> dict[str, float]:
    """Per-query codes − LSH of one run's strict query films against its database films."""
    model, payload = load_model(run)
    config = payload["config"]
    dataset = open_dataset(config["data"], config["image_size"])
    split = load_split(run / "split.json", dataset.case_ids)
    q, db = (
        encode_dataset(model, dataset.subset(split[p]), batch_size=64, progress=False)
        for p in ("query", "database")
    )
    nf = bool(config.get("no_finding_class", True))
    q_lab = relevance_labels(with_no_finding_np(q.labels, nf))
    db_lab = relevance_labels(with_no_finding_np(db.labels, nf))
    lsh_db, lsh_q = lsh_codes(db.features, q.features, q.hashes.shape[1])
    codes = per_query_ap(q.codes, db.codes, q_lab, db_lab)
    lsh = per_query_ap(lsh_q, lsh_db, q_lab, db_lab)
    return {"codes": float(codes.mean()), "lsh": float(lsh.mean()), **paired_difference(codes, lsh)}


def main(argv: list[str] | None = None) -> None:
    """Print one row per run, then the mean over the runs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="trained run folders (best.pt, split.json)")
    args = ap.parse_args(argv)
    print("| run | codes | LSH | codes − LSH ± SE | queries ahead / behind |")
    print("|---|---|---|---|---|")
    diffs = []
    for run in args.runs:
        r = compare_run(run)
        diffs.append((r["mean"], r["se"]))
        print(
            f"| {run.name} | {r['codes']:.4f} | {r['lsh']:.4f} | {r['mean']:+.4f} ± {r['se']:.4f} "
            f"| {r['ahead']} / {r['behind']} of {r['n']} |",
            flush=True,
        )
    if len(diffs) > 1:
        mean = float(np.mean([m for m, _ in diffs]))
        se = float(np.sqrt(sum(s**2 for _, s in diffs)) / len(diffs))
        print(f"\nmean over runs: {mean:+.4f} ± {se:.4f} (standard error of the mean of the runs)")


if __name__ == "__main__":
    main()
