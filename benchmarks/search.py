"""Archive-scale Hamming search: every backend beside FAISS ``IndexBinaryFlat``, 10^4–10^7 codes.

For uniform random codes and for clustered codes resembling learned radiograph
codes (:func:`cxrhash.index.backends.synthetic.clustered_codes`: 300 clusters of
skewed sizes, a 40 % "No Finding" cluster, 30 % exact duplicates), at each size:

* FAISS ``IndexBinaryFlat`` alone, the reference of every ratio;
* ``HashIndex.search`` (our interface: sharded memory-mapped store, merge, and
  the metadata of every hit from SQLite) over the exact ``flat`` and
  ``distinct`` backends;
* each backend alone: ``distinct`` (exact) and the approximate ``multihash``,
  ``ivf`` and ``hnsw`` over a sweep of their search parameters, with tie-aware
  recall@k against the exact distances.

Per configuration: build time, per-query latency one query at a time on one
thread, per-query latency of one batch of all queries on every core, bytes per
code of the backend's saved state, recall@k and speed-up over flat. Writes
``docs/search.md`` and prints the same rows as they are measured.

    python benchmarks/search.py                               # everything, HNSW up to 10^6
    python benchmarks/search.py --budget 8 --hnsw-max 100000  # docs/search.md (25 min here)
    python benchmarks/search.py --sizes 10000 100000 --out /tmp/search.md
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from cxrhash.index.backends import HammingBackend, create_backend, tie_aware_recall
from cxrhash.index.backends.synthetic import clustered_codes, uniform_codes
from cxrhash.index.store import HashIndex

DOCS = Path(__file__).resolve().parents[1] / "docs" / "search.md"
CORES = os.cpu_count() or 1


@dataclass
class Row:
    """One measured configuration."""

    kind: str
    n: int
    name: str
    params: str
    build_s: float
    single_ms: float
    batch_ms: float
    bytes_per_code: float
    recall: float
    flat_single_ms: float

    @property
    def speedup(self) -> float:
        """Flat's single-query time over this one's."""
        return self.flat_single_ms / self.single_ms

    def markdown(self) -> str:
        """One table row."""
        return (
            f"| {self.kind} | {self.n:,} | {self.name} | {self.params} | {self.build_s:.2f} | "
            f"{self.single_ms:.3f} | {self.batch_ms:.3f} | {self.bytes_per_code:.1f} | "
            f"{self.recall:.4f} | {self.speedup:.2f}× |"
        )


HEADER = (
    "| codes | N | search | parameters | build s | ms/query (1 query, 1 thread) | "
    f"ms/query (batch, {CORES} threads) | bytes/code | recall@k | speed-up vs flat |\n"
    "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"
)


def make_codes(kind: str, n: int, n_queries: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Database and query codes; clustered queries are held-out draws of the same clusters."""
    if kind == "uniform":
        return uniform_codes(n, bits, seed=1), uniform_codes(n_queries, bits, seed=2)
    both = clustered_codes(n + n_queries, bits, seed=1)
    return both[:n], both[n:]


def per_query_ms(
    search: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    budget_s: float,
) -> tuple[float, float, np.ndarray]:
    """Time one query at a time on one thread, then one batch on every core.

    Slow configurations stop after ``budget_s`` seconds of single queries (10 at
    least); the batch then holds the same queries. Returns (single ms/query,
    batch ms/query, the batch's distances), the distances for the recall.
    """
    faiss.omp_set_num_threads(1)
    search(queries[:1])  # warm-up (lazy builds, caches)
    t0 = time.perf_counter()
    done = 0
    while done < len(queries) and (done < 10 or time.perf_counter() - t0 < budget_s):
        search(queries[done : done + 1])
        done += 1
    single = 1e3 * (time.perf_counter() - t0) / done
    faiss.omp_set_num_threads(CORES)
    t0 = time.perf_counter()
    _, dists = search(queries[:done])
    batch = 1e3 * (time.perf_counter() - t0) / done
    faiss.omp_set_num_threads(1)
    return single, batch, dists


def state_bytes(backend: HammingBackend) -> int:
    """Bytes of the arrays a saved backend holds (codes, ids, graph or lists)."""
    return sum(a.nbytes for a in backend._state().values())


def bench_flat(
    kind: str, db: np.ndarray, queries: np.ndarray, k: int
) -> tuple[Row, np.ndarray, faiss.IndexBinaryFlat]:
    """FAISS IndexBinaryFlat alone, and the exact distances every recall is measured against."""
    t0 = time.perf_counter()
    flat = faiss.IndexBinaryFlat(8 * db.shape[1])
    flat.add(db)
    build = time.perf_counter() - t0
    single, batch, _ = per_query_ms(lambda q: flat.search(q, k)[::-1], queries, float("inf"))
    exact, _ = flat.search(queries, k)
    row = Row(
        kind, len(db), "FAISS IndexBinaryFlat", "–", build, single, batch, db.shape[1], 1.0, single
    )
    return row, exact, flat


def bench_hash_index(
    kind: str,
    db: np.ndarray,
    queries: np.ndarray,
    k: int,
    exact: np.ndarray,
    backend: str,
    flat: faiss.IndexBinaryFlat,
    shard_size: int,
    budget_s: float,
) -> Row:
    """``HashIndex.search`` with metadata, built through ``HashIndex.add`` in batches, timed
    against FAISS flat (``flat``) query by query; its speed-up column is that pair's ratio."""
    n = len(db)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        t0 = time.perf_counter()
        index = HashIndex.create(
            Path(tmp) / "idx", 8 * db.shape[1], "bench", backend=backend, shard_size=shard_size
        )
        step = 1 << 20
        for start in range(0, n, step):
            stop = min(n, start + step)
            index.add(
                db[start:stop],
                case_ids=[f"case{i:08d}" for i in range(start, stop)],
                findings=["No Finding" if i % 3 else "Effusion|Mass" for i in range(start, stop)],
                patient_ids=[f"p{i // 3}" for i in range(start, stop)],
            )
        index.search(queries[:1], k)  # builds the shard backends, loads the metadata table
        build = time.perf_counter() - t0
        hits = index.search(queries, k)
        found = np.array([[h.distance for h in hs] for hs in hits], np.int32)
        recall = tie_aware_recall(found, exact, k)
        single, flat_single = interleaved_ms(
            lambda q: index.search(q, k), lambda q: flat.search(q, k), queries, budget_s
        )
        faiss.omp_set_num_threads(CORES)
        t0 = time.perf_counter()
        index.search(queries, k)
        batch = 1e3 * (time.perf_counter() - t0) / len(queries)
        faiss.omp_set_num_threads(1)
        disk = sum(f.stat().st_size for f in Path(tmp, "idx").rglob("*") if f.is_file())
        table = index._meta._table
        in_ram = f", metadata in RAM {table.nbytes / n:.0f} B/code" if table is not None else ""
        index.close()
    name = f"HashIndex.search ({backend}) + metadata"
    params = f"{math.ceil(n / shard_size)} shard(s){in_ram}"
    return Row(kind, n, name, params, build, single, batch, disk / n, recall, flat_single)


def interleaved_ms(
    ours: Callable[[np.ndarray], Any],
    reference: Callable[[np.ndarray], Any],
    queries: np.ndarray,
    budget_s: float,
    block: int = 10,
) -> tuple[float, float]:
    """ms/query of ``ours`` and ``reference``, one query at a time on one thread, in
    alternating blocks of ``block`` queries (the same queries for both).

    Alternation makes load from other processes fall on both alike; blocks let each
    run with its own data in cache, as a search service does between its queries
    (alternating every single query would flush each one's arrays with the other's).
    """
    faiss.omp_set_num_threads(1)
    t_ours = t_ref = 0.0
    start = time.perf_counter()
    done = 0
    while done < len(queries) and (done < 10 or time.perf_counter() - start < budget_s):
        part = queries[done : done + block]
        for fn in (reference, ours):
            fn(part[:1])  # warm-up of this block
            t0 = time.perf_counter()
            for i in range(len(part)):
                fn(part[i : i + 1])
            elapsed = time.perf_counter() - t0
            if fn is ours:
                t_ours += elapsed
            else:
                t_ref += elapsed
        done += len(part)
    return 1e3 * t_ours / done, 1e3 * t_ref / done


def bench_backend(
    kind: str,
    db: np.ndarray,
    queries: np.ndarray,
    k: int,
    exact: np.ndarray,
    name: str,
    build_params: dict[str, Any],
    sweep: list[dict[str, Any]],
    flat_ms: float,
    budget_s: float,
) -> list[Row]:
    """Build one backend, then time and score it for each setting of its search parameters."""
    n = len(db)
    t0 = time.perf_counter()
    backend = create_backend(name, 8 * db.shape[1], **build_params)
    backend.add(np.arange(n, dtype=np.int64), db)
    build = time.perf_counter() - t0
    per_code = state_bytes(backend) / n
    rows = []
    for setting in sweep or [{}]:
        for attr, value in setting.items():
            setattr(backend, attr, value)
        single, batch, found = per_query_ms(lambda q: backend.search(q, k), queries, budget_s)
        recall = tie_aware_recall(found, exact[: len(found)], k)
        params = ", ".join(f"{a}={v}" for a, v in {**build_params, **setting}.items()) or "–"
        row = Row(kind, n, name, params, build, single, batch, per_code, recall, flat_ms)
        print(row.markdown(), flush=True)
        rows.append(row)
    return rows


def backends_for(n: int, hnsw_max: int) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(backend, build parameters, search-parameter sweep) measured at database size ``n``."""
    # ~sqrt(N) cells, at most 1,024: FAISS trains binary k-means as float k-means on
    # 64·nlist codes, which beyond that costs more than the whole rest of a run here.
    nlist = int(min(1024, 2 ** round(math.log2(math.sqrt(n)))))
    out: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
        ("distinct", {}, [{"probe_radius": None}, {"probe_radius": 1}, {"probe_radius": 2}]),
        ("multihash", {"nhash": 4}, [{"nflip": 0}, {"nflip": 1}, {"nflip": 2}]),
        ("multihash", {"nhash": 8}, [{"nflip": 1}, {"nflip": 2}]),
        (
            "ivf",
            {"nlist": nlist, "train_size": 64 * nlist},
            [{"nprobe": 4}, {"nprobe": 16}, {"nprobe": 64}],
        ),
    ]
    if n <= hnsw_max:
        out.append(
            (
                "hnsw",
                {"m": 16, "ef_construction": 64},
                [{"ef_search": 64}, {"ef_search": 128}, {"ef_search": 256}],
            )
        )
    return out


def run(
    sizes: list[int],
    kinds: list[str],
    bits: int,
    n_queries: int,
    k: int,
    hnsw_max: int,
    shard_size: int,
    budget_s: float,
) -> list[Row]:
    """Every configuration at every size and kind of codes."""
    rows: list[Row] = []
    print(HEADER, flush=True)
    for kind in kinds:
        for n in sizes:
            db, queries = make_codes(kind, n, n_queries, bits)
            flat_row, exact, flat = bench_flat(kind, db, queries, k)
            print(flat_row.markdown(), flush=True)
            rows.append(flat_row)
            for backend in ("flat", "distinct"):
                row = bench_hash_index(
                    kind, db, queries, k, exact, backend, flat, shard_size, budget_s
                )
                print(row.markdown(), flush=True)
                rows.append(row)
            for name, build, sweep in backends_for(n, hnsw_max):
                rows += bench_backend(
                    kind, db, queries, k, exact, name, build, sweep, flat_row.single_ms, budget_s
                )
            del db, queries
            gc.collect()
    return rows


def summary(rows: list[Row], target_n: int) -> str:
    """The two targets of the issue, read off the measured rows."""
    lines = []
    for row in rows:
        if row.name.startswith("HashIndex.search"):
            backend = row.name.split("(")[1].split(")")[0]
            lines.append(
                f"- {row.kind}, N = {row.n:,}: exact `HashIndex.search` ({backend} backend) with "
                f"metadata {row.single_ms:.3f} ms vs FAISS flat {row.flat_single_ms:.3f} ms per "
                f"query: **{row.single_ms / row.flat_single_ms:.2f}×** flat's time"
            )
    best = [
        r
        for r in rows
        if r.n == target_n
        and r.kind == "clustered"
        and r.recall >= 0.99
        and not r.name.startswith("FAISS")
    ]
    if best:
        top = max(best, key=lambda r: r.speedup)
        lines.append(
            f"- clustered, N = {target_n:,}: fastest configuration with recall@k ≥ 0.99 is "
            f"{top.name} ({top.params}): {top.single_ms:.3f} ms per query, "
            f"**{top.speedup:.1f}×** faster than flat, recall {top.recall:.4f}"
        )
    return "\n".join(lines)


def _without_note(argv: list[str]) -> list[str]:
    """The command line minus ``--note TEXT`` (printed as its own sentence), quoted."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            out.append(arg)
    return out


OWN_SECTIONS = ("Targets", "Every configuration")


def other_sections(path: Path) -> str:
    """The ``## `` sections of ``path`` this script does not write (e.g. benchmarks/rerank.py's
    "Two-stage search"), to keep them when the page is rewritten."""
    if not path.exists():
        return ""
    parts = re.split(r"^(?=## )", path.read_text(), flags=re.M)[1:]
    kept = [p for p in parts if p.splitlines()[0][3:].strip() not in OWN_SECTIONS]
    return "".join("\n" + p.rstrip("\n") + "\n" for p in kept)


def write_doc(path: Path, rows: list[Row], args: argparse.Namespace, minutes: float) -> None:
    """The Markdown report: set-up, summary, and every measured row (other sections kept)."""
    table = "\n".join([HEADER] + [r.markdown() for r in rows])
    kept = other_sections(path)
    path.write_text(
        "# Archive-scale Hamming search\n\n"
        f"Command: `{' '.join(['python benchmarks/search.py', *_without_note(args.argv)])}` "
        f"({minutes:.0f} min). Machine: {platform.machine()}, {CORES} cores, CPU only, FAISS "
        f"{faiss.__version__}. {args.bits}-bit codes, k = {args.k}, {args.queries} queries "
        "per configuration (fewer where one took longer than the --budget of "
        f"{args.budget:g} s). {args.note}\n\n"
        "- **codes**: `uniform` = independent uniform codes (queries likewise); `clustered` = "
        '`clustered_codes` (300 centres, a 40 % "No Finding" cluster, 30 % exact copies of '
        "their centre, 2 % bit flips on the rest), queries held out from the same draw.\n"
        "- **ms/query (1 query, 1 thread)**: the queries searched one at a time with FAISS on "
        "one thread; **batch**: all queries in one call on every core.\n"
        "- **bytes/code**: the arrays of the backend's saved state over N; for `HashIndex` "
        "the index folder on disk (codes, SQLite metadata, manifest).\n"
        "- **recall@k**: tie-aware (a returned item counts when its distance is ≤ the exact "
        "k-th distance), against FAISS flat in the same run; exact backends must give 1.\n"
        "- **speed-up**: FAISS flat's single-query time over the row's. `HashIndex` rows are "
        "timed in alternating blocks of 10 queries with FAISS flat on the same queries (so load "
        "from other processes falls on both alike, while each keeps its own arrays in cache "
        "within a block, as a service would), and their speed-up is that pair's ratio; its build "
        "time includes the SQLite inserts, the shard backends and loading the metadata table.\n\n"
        "## Targets\n\n"
        f"{summary(rows, max(args.sizes))}\n\n"
        "## Every configuration\n\n"
        f"{table}\n" + kept
    )
    print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Measure every configuration and write the page (``argv`` defaults to ``sys.argv``)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6, 10**7])
    ap.add_argument(
        "--kinds", nargs="+", default=["uniform", "clustered"], choices=["uniform", "clustered"]
    )
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument(
        "--hnsw-max",
        type=int,
        default=10**6,
        help="largest N at which HNSW is built (its build is the slowest)",
    )
    ap.add_argument("--shard-size", type=int, default=2**22, help="HashIndex shard size")
    ap.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds of single queries per configuration before it stops early (10 at least)",
    )
    ap.add_argument("--out", type=Path, default=DOCS)
    ap.add_argument("--note", default="", help="a sentence on the conditions, for the report")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    t0 = time.perf_counter()
    rows = run(
        args.sizes,
        args.kinds,
        args.bits,
        args.queries,
        args.k,
        args.hnsw_max,
        args.shard_size,
        args.budget,
    )
    write_doc(args.out, rows, args, (time.perf_counter() - t0) / 60)


if __name__ == "__main__":
    main()
