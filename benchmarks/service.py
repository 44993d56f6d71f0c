"""The retrieval server under load: `/api/search` latency and throughput at 1, 2, 4 and 8
concurrent clients, beside the same model's bare decode + encode + search in-process.

Builds a small index (phantom films; the ``demo`` profile's ResNet-18 at 64 px, trained
briefly: speed does not depend on how well the model retrieves), measures the library's own
search of one film at a time, then starts ``cxrhash serve`` in a subprocess on a free
loopback port and drives it with N client threads (one ``httpx.Client`` each, one request
after another) for ``--seconds`` each. Writes ``docs/service-bench.md`` (``--out``) and prints
the same tables.

    python benchmarks/service.py
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

from cxrhash.config import make_config
from cxrhash.data.images import load_resized
from cxrhash.data.phantom import write_phantom_dataset
from cxrhash.data.readers import open_dataset
from cxrhash.index.store import HashIndex
from cxrhash.retrieve import build_index, search_decoded
from cxrhash.training.checkpoint import load_model
from cxrhash.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "service-bench.md"
#: The goals of issue #13 this page checks.
MAX_OVERHEAD = 0.20
MIN_SPEED_UP = 1.5


@dataclass
class Setup:
    """The index the bench searches and the films it uploads."""

    profile: str
    epochs: int
    films: list[Path]
    index_dir: Path
    checkpoint: Path
    backbone: str = ""
    image_size: int = 0
    bits: int = 0


@dataclass
class Run:
    """Latencies (seconds) of the requests one measurement completed in ``elapsed`` seconds."""

    clients: int
    latencies: list[float]
    elapsed: float
    errors: int = 0
    server_ms: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Requests answered per second."""
        return len(self.latencies) / self.elapsed

    def ms(self, q: float) -> float:
        """The ``q``-th percentile of the latencies, in ms."""
        return 1000 * float(np.percentile(self.latencies, q))


def prepare(work: Path, profile: str, epochs: int, n_films: int, source_px: int) -> Setup:
    """Phantom films, a model trained on them for ``epochs`` and an index of them."""
    data = write_phantom_dataset(work / "data", n_films, source_px, seed=0)
    run = work / "run"
    config = make_config(profile, data=f"phantom:{data}", epochs=epochs)
    train(config, run, progress=False)
    index_dir = work / "index"
    dataset = open_dataset(f"phantom:{data}", config.image_size)
    build_index(run / "best.pt", dataset, index_dir, progress=False)
    films = sorted((data / "images").glob("*.png"))
    return Setup(
        profile,
        epochs,
        films,
        index_dir,
        run / "best.pt",
        config.backbone,
        config.image_size,
        config.bits,
    )


def bare(setup: Setup, k: int, seconds: float) -> dict[str, Run]:
    """The library alone, one film at a time for ``seconds``: decoding the file
    (``load_resized``), and encoding + searching it (``search_decoded``), timed apart."""
    model, _ = load_model(setup.checkpoint)
    decode, search = Run(1, [], 0.0), Run(1, [], 0.0)
    with HashIndex.open(setup.index_dir) as index:
        search_decoded(model, index, [load_resized(setup.films[0], setup.image_size)], k=k)
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            image = load_resized(setup.films[i % len(setup.films)], setup.image_size)
            t1 = time.perf_counter()
            search_decoded(model, index, [image], k=k, heatmap="attention")
            t2 = time.perf_counter()
            decode.latencies.append(t1 - t0)
            search.latencies.append(t2 - t1)
            i += 1
    both = [d + s for d, s in zip(decode.latencies, search.latencies, strict=True)]
    elapsed = time.perf_counter() - start
    return {
        "decode": decode,
        "encode+search": search,
        "decode+encode+search": Run(1, both, elapsed),
    }


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on (asked of the OS)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    index_dir: Path, port: int, log: Path, threads: int
) -> subprocess.Popen[bytes]:
    """``cxrhash serve`` on ``127.0.0.1:port`` in a subprocess (torch limited to ``threads``
    threads), once it answers its health."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path[1:]]),
        "OMP_NUM_THREADS": str(threads),
    }
    cmd = [sys.executable, "-m", "cxrhash.cli", "serve", "--index", str(index_dir)]
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not answer within 120 s")


def drive(url: str, uploads: list[bytes], clients: int, k: int, seconds: float) -> Run:
    """``clients`` threads posting films one after another for ``seconds`` (after a short
    warm-up each); every answer's latency, and the server's own median timings."""
    run = Run(clients, [], seconds)
    timings: list[dict[str, float]] = []
    lock = threading.Lock()
    go = threading.Barrier(clients + 1)
    stop = time.perf_counter() + 1e9

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            post = _poster(http, k)
            for i in range(3):
                post(uploads[(c + i) % len(uploads)])  # warm-up: connection and code paths
            go.wait()
            i = c * 7
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                res = post(uploads[i % len(uploads)])
                latency = time.perf_counter() - t0
                with lock:
                    if res.status_code == 200:
                        run.latencies.append(latency)
                        timings.append(res.json()["timings"])
                    else:
                        run.errors += 1
                i += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    go.wait()
    start = time.perf_counter()
    stop = start + seconds
    for t in threads:
        t.join()
    run.elapsed = time.perf_counter() - start
    run.server_ms = {key: float(np.median([t[key] for t in timings])) for key in timings[0]}
    return run


def _poster(http: httpx.Client, k: int) -> Callable[[bytes], httpx.Response]:
    def post(data: bytes) -> httpx.Response:
        files = {"image": ("film.png", data, "image/png")}
        return http.post("/api/search", files=files, params={"k": k})

    return post


def tables(library: dict[str, Run], runs: list[Run]) -> str:
    """The two Markdown tables: the library alone, and the server per number of clients."""
    lines = [
        "| in-process, one film at a time | p50 ms | p95 ms | p99 ms | films/s |",
        "|---|---|---|---|---|",
    ]
    for name, r in library.items():
        rate = len(r.latencies) / sum(r.latencies)
        lines.append(f"| {name} | {r.ms(50):.2f} | {r.ms(95):.2f} | {r.ms(99):.2f} | {rate:.1f} |")
    lines += [
        "",
        "| clients | requests | errors | req/s | × 1 client | p50 ms | p95 ms | p99 ms "
        "| server decode / encode / search ms (p50) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    one = runs[0].throughput
    for r in runs:
        s = r.server_ms
        inside = f"{s['decode_ms']:.2f} / {s['encode_ms']:.2f} / {s['search_ms']:.2f}"
        lines.append(
            f"| {r.clients} | {len(r.latencies)} | {r.errors} | {r.throughput:.1f} | "
            f"{r.throughput / one:.2f} | {r.ms(50):.2f} | {r.ms(95):.2f} | {r.ms(99):.2f} "
            f"| {inside} |"
        )
    return "\n".join(lines)


def verdict(library: dict[str, Run], runs: list[Run]) -> str:
    """The goals of issue #13, checked on these figures."""
    one = next(r for r in runs if r.clients == 1)
    lines = []
    for name in ("encode+search", "decode+encode+search"):
        over = one.ms(50) / library[name].ms(50) - 1
        ok = "meets" if over <= MAX_OVERHEAD else "misses"
        lines.append(
            f"* Overhead at 1 client, p50 over the bare {name}: **{100 * over:+.0f} %** "
            f"({ok} the goal of ≤ {100 * MAX_OVERHEAD:.0f} %)."
        )
    top = max(runs, key=lambda r: r.clients)
    ratio = top.throughput / one.throughput
    ok = "meets" if ratio >= MIN_SPEED_UP else "misses"
    lines.append(
        f"* Throughput at {top.clients} clients / 1 client: **{ratio:.2f}×** ({ok} the goal of "
        f"≥ {MIN_SPEED_UP}×)."
    )
    return "\n".join(lines)


def machine() -> str:
    """CPU, cores, torch threads and the load average (other processes share the cores)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads, Python "
        f"{platform.python_version()}, CPU only; load average {load}"
    )


def page(setup: Setup, library: dict[str, Run], runs: list[Run], args: argparse.Namespace) -> str:
    """The Markdown page of one bench run."""
    command = shlex.join(["python", "benchmarks/service.py", *args.argv])
    return f"""# Retrieval server benchmark

Generated by `benchmarks/service.py` (issue #13): `POST /api/search` of `cxrhash serve`
driven on loopback by 1, 2, 4 and 8 client threads (one `httpx.Client` each, one request
after another, {args.seconds:g} s per row), beside the same model's search of one film in
the same process, measured in the same run. The clients run on the same cores as the server.

* Command: `{command}`
* Machine: {machine()} (at the end of the run).
* Model: the `{setup.profile}` profile ({setup.backbone}, {setup.image_size} px,
  {setup.bits} bits) trained {setup.epochs} epoch(s) on {len(setup.films)} phantom films of
  {args.source_px} px, which are also the index (flat backend) and the uploads; k = {args.k},
  no re-rank, attention heat-map computed as the server does.

## Figures

{tables(library, runs)}

`decode` reads the PNG file and resizes it (`load_resized`); `encode+search` is
`search_decoded` of one film (the model, the heat-map, the index search). A server row's
latency is the client's, from sending the request to reading the whole answer; the last
column is what the server's answers report (its time decoding, and the time of the batch each
request was encoded and searched in).

## Goals

{verdict(library, runs)}
"""


def main(argv: list[str] | None = None) -> None:
    """Build the index, measure the library and the server, and write the page."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo", help="training profile of the model")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--films", type=int, default=300, help="phantom films indexed and uploaded")
    ap.add_argument("--source-px", type=int, default=128, help="side of the phantom PNGs")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the library and the server (OMP_NUM_THREADS); on a machine "
        "whose cores are shared, intra-op threads that spin-wait for each other can cost 10×",
    )
    ap.add_argument("--work", type=Path, default=None, help="folder for data, model, index")
    ap.add_argument("--out", type=Path, default=DOCS)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="cxrhash-service-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        setup = prepare(work, args.profile, args.epochs, args.films, args.source_px)
        library = bare(setup, args.k, args.seconds)
        uploads = [p.read_bytes() for p in setup.films]
        port = free_port()
        server = start_server(setup.index_dir, port, work / "server.log", args.threads)
        try:
            url = f"http://127.0.0.1:{port}"
            runs = []
            for n in args.clients:
                runs.append(drive(url, uploads, n, args.k, args.seconds))
                print(f"{n} client(s): {runs[-1].throughput:.1f} req/s", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    text = page(setup, library, runs, args)
    print(tables(library, runs))
    print(verdict(library, runs))
    args.out.write_text(text, encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
