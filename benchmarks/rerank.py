"""Latency of two-stage search: a Hamming shortlist re-ranked by the query's float outputs.

For clustered 64-bit codes resembling learned radiograph codes
(:func:`cxrhash.index.backends.synthetic.clustered_codes`) with float outputs
synthesised consistently with them (f = b ⊙ (|g| + 0.01), g ~ N(0, 1) per bit,
so the signs are the codes), at each database size, ``HashIndex.search`` with metadata,
k results, one query at a time on one thread:

* Hamming only (``rerank="none"``, the top k);
* the first stage alone: ``search_packed`` of the top L (what both re-ranks start from);
* + asymmetric re-rank of the L nearest (⟨f_q, b⟩ against their codes);
* + stored floats (cosine against their float16 outputs from ``shards/NNNN.f16``);

over the ``flat`` and ``distinct`` backends (one index with a float store, opened
with each backend), in alternating blocks of 10 queries so load from other
processes falls on every mode alike. Bytes per film: the index folder on disk
without and with the float files. Writes the "Two-stage search" section of
``docs/search.md`` (the rest of that file is ``benchmarks/search.py``'s).

    OMP_NUM_THREADS=1 python benchmarks/rerank.py
    python benchmarks/rerank.py --sizes 10000 --out /tmp/search.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from cxrhash.index.backends.synthetic import clustered_codes
from cxrhash.index.rerank import default_shortlist
from cxrhash.index.store import HashIndex

DOCS = Path(__file__).resolve().parents[1] / "docs" / "search.md"
TITLE = "Two-stage search: re-rank latency"
_BATCH = 1 << 17  # rows per add (bounds the float32 temporary)


def sign_consistent_floats(codes: np.ndarray, bits: int, seed: int) -> np.ndarray:
    """Float outputs whose signs are ``codes`` (bit 1 ⇔ f ≥ 0): b ⊙ (|g| + 0.01), g ~ N(0, 1).

    The 0.01 keeps every output off zero: −1 · 0 = −0.0 would read as bit 1.
    """
    rng = np.random.default_rng(seed)
    signs = np.unpackbits(codes, axis=1, count=bits).astype(np.float32) * 2 - 1
    return signs * (np.abs(rng.standard_normal(signs.shape, dtype=np.float32)) + 0.01)


def build_index(path: Path, db: np.ndarray, bits: int) -> float:
    """A flat index with a float store holding ``db``; returns the seconds it took."""
    t0 = time.perf_counter()
    index = HashIndex.create(path, bits, "bench", store_floats=True)
    for start in range(0, len(db), _BATCH):
        codes = db[start : start + _BATCH]
        stop = start + len(codes)
        index.add(
            codes,
            case_ids=[f"case{i:08d}" for i in range(start, stop)],
            findings=["No Finding" if i % 3 else "Effusion|Mass" for i in range(start, stop)],
            floats=sign_consistent_floats(codes, bits, seed=start),
        )
    index.close()
    return time.perf_counter() - t0


def interleaved_ms(
    modes: dict[str, Callable[[np.ndarray, np.ndarray], Any]],
    queries: np.ndarray,
    floats: np.ndarray,
    budget_s: float,
    block: int = 10,
) -> dict[str, float]:
    """ms/query of each mode, one query at a time, in alternating blocks of ``block`` queries
    (the same queries for every mode; each block starts with one untimed warm-up query)."""
    faiss.omp_set_num_threads(1)
    spent = dict.fromkeys(modes, 0.0)
    start, done = time.perf_counter(), 0
    while done < len(queries) and (done < 2 * block or time.perf_counter() - start < budget_s):
        part, part_f = queries[done : done + block], floats[done : done + block]
        for name, fn in modes.items():
            fn(part[:1], part_f[:1])
            t0 = time.perf_counter()
            for i in range(len(part)):
                fn(part[i : i + 1], part_f[i : i + 1])
            spent[name] += time.perf_counter() - t0
        done += len(part)
    return {name: 1e3 * s / done for name, s in spent.items()}


def measure(
    n: int, bits: int, k: int, shortlist: int, n_queries: int, budget_s: float
) -> list[dict[str, Any]]:
    """Every mode over both exact backends at database size ``n``."""
    both = clustered_codes(n + n_queries, bits, seed=1)
    db, queries = both[:n], both[n:]
    q_floats = sign_consistent_floats(queries, bits, seed=10**9)
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        path = Path(tmp) / "idx"
        build_s = build_index(path, db, bits)
        files = [f for f in path.rglob("*") if f.is_file()]
        total = sum(f.stat().st_size for f in files)
        floats_bytes = sum(f.stat().st_size for f in files if f.suffix == ".f16")
        for backend in ("flat", "distinct"):
            index = HashIndex.open(path, backend=backend)
            index.search(queries[:1], k)  # builds the backend, loads the metadata table

            def rerank(mode: str, index: HashIndex = index) -> Callable[..., Any]:
                return lambda q, f: index.search(
                    q, k, rerank=mode, shortlist=shortlist, query_floats=f
                )

            modes = {
                "Hamming only": lambda q, f, index=index: index.search(q, k),
                f"first stage alone (Hamming top {shortlist})": (
                    lambda q, f, index=index: index.search_packed(q, shortlist)
                ),
                "+ asymmetric re-rank": rerank("asymmetric"),
                "+ stored floats": rerank("floats"),
            }
            ms = interleaved_ms(modes, queries, q_floats, budget_s)
            for mode, value in ms.items():
                with_floats = mode == "+ stored floats"
                row = {
                    "n": n,
                    "backend": backend,
                    "mode": mode,
                    "ms": value,
                    "extra": value - ms["Hamming only"],
                    "bytes": (total if with_floats else total - floats_bytes) / n,
                    "build_s": build_s,
                }
                print(markdown_row(row), flush=True)
                rows.append(row)
            index.close()
    return rows


HEADER = (
    "| N | backend | search | ms/query (1 query, 1 thread) | extra vs Hamming only (ms) | "
    "bytes/film on disk |\n|---:|---|---|---:|---:|---:|"
)


def markdown_row(row: dict[str, Any]) -> str:
    """One table row."""
    extra = "–" if row["mode"] == "Hamming only" else f"{row['extra']:+.3f}"
    return (
        f"| {row['n']:,} | {row['backend']} | {row['mode']} | {row['ms']:.3f} | {extra} | "
        f"{row['bytes']:.1f} |"
    )


def section(rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    """The Markdown section: set-up, the table and how to read it."""
    command = " ".join(["OMP_NUM_THREADS=1 python benchmarks/rerank.py", *args.argv])
    builds = ", ".join(
        f"{r['n']:,}: {r['build_s']:.0f} s"
        for r in rows
        if r["backend"] == "flat" and r["mode"] == "Hamming only"
    )
    return (
        f"## {TITLE}\n\n"
        f"Command: `{command}` ({seconds:.0f} s). Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, one thread used, FAISS {faiss.__version__}. {args.note}\n\n"
        f"{args.bits}-bit `clustered_codes` (as above), float outputs synthesised with the "
        "codes' signs (f = b ⊙ (|g| + 0.01), g ~ N(0, 1)); k = "
        f"{args.k}, shortlist L = {args.shortlist} (the default max(10·k, 100)), "
        f"{args.queries} held-out queries per size (fewer where a size took longer than "
        f"--budget {args.budget:g} s), each mode timed one query at a time in alternating "
        "blocks of 10 queries. Every row is `HashIndex.search` with the metadata of the k "
        "hits, except the first stage alone (`search_packed(q, L)`, no metadata). Bytes per "
        f"film: the index folder (codes {args.bits // 8} B, SQLite metadata, manifest) without "
        f"and with the float files ({2 * args.bits} B per film: float16 × {args.bits}). "
        f"Index build with floats (SQLite inserts, codes, floats): {builds}.\n\n"
        f"{HEADER}\n" + "\n".join(markdown_row(r) for r in rows) + "\n"
    )


def write_section(path: Path, title: str, text: str) -> None:
    """Put ``text`` into ``path`` in place of the section titled ``title`` (or append it)."""
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)
    print(f"wrote the section {title!r} of {path}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Measure every size and write the section (``argv`` defaults to ``sys.argv``)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--shortlist", type=int, default=None, help="L (default max(10·k, 100))")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--budget", type=float, default=30.0, help="seconds of queries per size")
    ap.add_argument("--out", type=Path, default=DOCS)
    ap.add_argument("--note", default="", help="a sentence on the conditions, for the report")
    raw = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(raw)
    args.shortlist = args.shortlist or default_shortlist(args.k)
    args.argv = [a for a in raw if not a.startswith("--note")]
    if "--note" in raw:  # its value too
        at = raw.index("--note")
        args.argv = raw[:at] + raw[at + 2 :]
    t0 = time.perf_counter()
    print(HEADER, flush=True)
    rows = []
    for n in args.sizes:
        rows += measure(n, args.bits, args.k, args.shortlist, args.queries, args.budget)
    write_section(args.out, TITLE, section(rows, args, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
