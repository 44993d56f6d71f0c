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
import math
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
from cxrhash.training.checkpoint import load_checkpoint, load_model
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
    cpu_seconds: float = float("nan")  # CPU time the measured process spent on them
    timings: list[dict[str, float]] = field(default_factory=list)  # what the server reported

    def __add__(self, other: Run) -> Run:
        """Both runs' requests pooled (the same measurement made in two rounds)."""
        return Run(
            self.clients,
            self.latencies + other.latencies,
            self.elapsed + other.elapsed,
            self.errors + other.errors,
            self.cpu_seconds + other.cpu_seconds,
            self.timings + other.timings,
        )

    @property
    def server_ms(self) -> dict[str, float]:
        """The median of each timing the server reported."""
        keys = self.timings[0] if self.timings else {}
        return {key: float(np.median([t[key] for t in self.timings])) for key in keys}

    @property
    def throughput(self) -> float:
        """Requests answered per second."""
        return len(self.latencies) / self.elapsed

    def ms(self, q: float) -> float:
        """The ``q``-th percentile of the latencies, in ms."""
        return 1000 * float(np.percentile(self.latencies, q))

    @property
    def cpu_ms(self) -> float:
        """CPU milliseconds per request (user + system, every thread of the process)."""
        return 1000 * self.cpu_seconds / max(len(self.latencies), 1)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def prepare(work: Path, profile: str, epochs: int, n_films: int, source_px: int) -> Setup:
    """Phantom films, a model trained on them for ``epochs`` and an index of them, in
    ``work``; what an earlier run left there (its ``index/model.json`` written last) is
    used as it is."""
    data, run, index_dir = work / "data", work / "run", work / "index"
    if not (index_dir / "model.json").is_file():
        write_phantom_dataset(data, n_films, source_px, seed=0)
        train(make_config(profile, data=f"phantom:{data}", epochs=epochs), run, progress=False)
        config = load_checkpoint(run / "best.pt")["config"]
        dataset = open_dataset(f"phantom:{data}", config["image_size"])
        build_index(run / "best.pt", dataset, index_dir, progress=False)
    config = load_checkpoint(run / "best.pt")["config"]
    films = sorted((data / "images").glob("*.png"))
    return Setup(
        config.get("profile", profile),
        int(config["epochs"]),
        films,
        index_dir,
        run / "best.pt",
        config["backbone"],
        config["image_size"],
        config["bits"],
    )


def bare(setup: Setup, k: int, seconds: float) -> dict[str, Run]:
    """The library alone, one film at a time for ``seconds``: decoding the file
    (``load_resized``), and encoding + searching it (``search_decoded``), timed apart."""
    model, _ = load_model(setup.checkpoint)
    decode, search = Run(1, [], 0.0), Run(1, [], 0.0)
    with HashIndex.open(setup.index_dir) as index:
        search_decoded(model, index, [load_resized(setup.films[0], setup.image_size)], k=k)
        start, cpu = time.perf_counter(), time.process_time()
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
    full = Run(1, both, time.perf_counter() - start, cpu_seconds=time.process_time() - cpu)
    return {"decode": decode, "encode+search": search, "decode+encode+search": full}


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on (asked of the OS)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(index_dir: Path, port: int, log: Path, threads: int) -> subprocess.Popen[bytes]:
    """``cxrhash serve`` on ``127.0.0.1:port`` in a subprocess (torch limited to ``threads``
    threads), once it answers its health."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path[1:]]),
        "OMP_NUM_THREADS": str(threads),
    }
    cmd = [sys.executable, "-m", "cxrhash.cli", "serve", "--index", str(index_dir)]
    cmd += ["--uploads-per-minute", "0"]  # the clients are the load, not abuse to limit
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


Request = Callable[[httpx.Client, int], httpx.Response]


def drive(url: str, server_pid: int, clients: int, seconds: float, request: Request) -> Run:
    """``clients`` threads sending ``request(http, i)`` one after another for ``seconds``
    (after a short warm-up each): every answer's latency, the server's CPU time over the
    run, and the ``timings`` the server reported."""
    run = Run(clients, [], seconds)
    lock = threading.Lock()
    go = threading.Barrier(clients + 1)
    stop = time.perf_counter() + 1e9

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(3):
                request(http, c + i)  # warm-up: the connection and the code paths
            go.wait()
            i = c * 7
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                res = request(http, i)
                latency = time.perf_counter() - t0
                with lock:
                    if res.status_code != 200:
                        run.errors += 1
                        continue
                    run.latencies.append(latency)
                    if "timings" in (body := res.json()):
                        run.timings.append(body["timings"])
                i += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    go.wait()
    start, cpu = time.perf_counter(), process_cpu(server_pid)
    stop = start + seconds
    for t in threads:
        t.join()
    run.elapsed = time.perf_counter() - start
    run.cpu_seconds = process_cpu(server_pid) - cpu
    return run


def searches(uploads: list[bytes], k: int) -> Request:
    """``POST /api/search`` of the ``i``-th film (cycling) with ``k``."""

    def post(http: httpx.Client, i: int) -> httpx.Response:
        files = {"image": ("film.png", uploads[i % len(uploads)], "image/png")}
        return http.post("/api/search", files=files, params={"k": k})

    return post


def health(http: httpx.Client, _: int) -> httpx.Response:
    """``GET /api/health``: the HTTP round trip through the server with no work in it."""
    return http.get("/api/health")


@dataclass
class Measured:
    """Everything one bench run measured, in rounds (the cores are shared, so the load may
    drift): the library alone per round, the health round trip, the searches per number of
    clients."""

    rounds: list[dict[str, Run]]
    health: Run
    runs: list[Run]

    @property
    def library(self) -> dict[str, Run]:
        """The library's runs of every round, pooled."""
        return {
            name: sum((r[name] for r in self.rounds[1:]), self.rounds[0][name])
            for name in self.rounds[0]
        }


def tables(m: Measured) -> str:
    """The Markdown tables: the library alone, and the server per number of clients."""
    lines = [
        "| in-process, one film at a time | films | p50 ms | p95 ms | p99 ms | CPU ms/film |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in m.library.items():
        cpu = "–" if math.isnan(r.cpu_seconds) else f"{r.cpu_ms:.2f}"
        lines.append(
            f"| {name} | {len(r.latencies)} | {r.ms(50):.2f} | {r.ms(95):.2f} | {r.ms(99):.2f} "
            f"| {cpu} |"
        )
    h = m.health
    lines += [
        "",
        "| clients | requests | errors | req/s | × 1 client | p50 ms | p95 ms | p99 ms "
        "| server CPU ms/req | server decode / encode / search ms (p50) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| 1, `GET /api/health` | {len(h.latencies)} | {h.errors} | {h.throughput:.1f} | – "
        f"| {h.ms(50):.2f} | {h.ms(95):.2f} | {h.ms(99):.2f} | {h.cpu_ms:.2f} | – |",
    ]
    one = m.runs[0].throughput
    for r in m.runs:
        s = r.server_ms
        inside = f"{s['decode_ms']:.2f} / {s['encode_ms']:.2f} / {s['search_ms']:.2f}"
        lines.append(
            f"| {r.clients} | {len(r.latencies)} | {r.errors} | {r.throughput:.1f} | "
            f"{r.throughput / one:.2f} | {r.ms(50):.2f} | {r.ms(95):.2f} | {r.ms(99):.2f} "
            f"| {r.cpu_ms:.2f} | {inside} |"
        )
    return "\n".join(lines)


def verdict(m: Measured) -> str:
    """The goals of issue #13, checked on these figures."""
    one = next(r for r in m.runs if r.clients == 1)
    library = m.library
    lines = []
    for name in ("encode+search", "decode+encode+search"):
        over = one.ms(50) / library[name].ms(50) - 1
        ok = "meets" if over <= MAX_OVERHEAD else "misses"
        lines.append(
            f"* Latency at 1 client, p50, over the bare {name}: **{100 * over:+.0f} %** "
            f"({ok} the goal of ≤ {100 * MAX_OVERHEAD:.0f} %)."
        )
    bare_cpu = library["decode+encode+search"].cpu_ms
    lines.append(
        f"* CPU per request at 1 client over the bare decode+encode+search: "
        f"**{100 * (one.cpu_ms / bare_cpu - 1):+.0f} %** ({one.cpu_ms:.2f} against "
        f"{bare_cpu:.2f} ms; `GET /api/health` alone costs the server {m.health.cpu_ms:.2f} ms)."
    )
    top = max(m.runs, key=lambda r: r.clients)
    ratio = top.throughput / one.throughput
    ok = "meets" if ratio >= MIN_SPEED_UP else "misses"
    lines.append(
        f"* Throughput at {top.clients} clients / 1 client: **{ratio:.2f}×** ({ok} the goal of "
        f"≥ {MIN_SPEED_UP}×)."
    )
    drift = " / ".join(f"{r['decode+encode+search'].ms(50):.2f}" for r in m.rounds)
    lines.append(
        f"* The bare decode+encode+search, p50, round by round: {drift} ms (how much the "
        "machine's load drifted)."
    )
    return "\n".join(lines)


def machine(load_before: tuple[float, ...]) -> str:
    """CPU, cores, torch threads and the load average (other processes share the cores)."""
    loads = [", ".join(f"{x:.2f}" for x in load) for load in (load_before, os.getloadavg())]
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} with {torch.get_num_threads()} thread(s), Python "
        f"{platform.python_version()}, CPU only; load average (1, 5, 15 min) {loads[0]} at "
        f"the start of the run, {loads[1]} at its end"
    )


def page(setup: Setup, m: Measured, args: argparse.Namespace) -> str:
    """The Markdown page of one bench run."""
    command = shlex.join(["python", "benchmarks/service.py", *args.argv])
    return f"""# Retrieval server benchmark

Generated by `benchmarks/service.py` (issue #13): `POST /api/search` of `cxrhash serve`
driven on loopback by 1 to {max(args.clients)} client threads (one `httpx.Client` each, one
request after another), beside the same model's search of one film in the bench's own
process, measured in the same run. The cores are shared with other work, so the run is made
of {args.rounds} rounds, each measuring the library, then the server at each number of
clients, {args.seconds / args.rounds:g} s each; a row pools its rounds ({args.seconds:g} s).
The clients run on the same cores as the server, and torch has {args.threads} thread(s) in
both processes (`OMP_NUM_THREADS`).

* Command: `{command}`
* Machine: {machine(args.load_before)}.
* Model: the `{setup.profile}` profile ({setup.backbone}, {setup.image_size} px, {setup.bits} bits),
  trained {setup.epochs} epoch(s) on {len(setup.films)} phantom films of {args.source_px} px, which
  are also the index (flat backend) and the uploads; k = {args.k}, no re-rank, the attention
  heat-map computed as the server does.

## Figures

{tables(m)}

`decode` reads the PNG file and resizes it (`load_resized`); `encode+search` is
`search_decoded` of one film (the model, its heat-map, the index search). A server row's
latency is the client's, from sending the request to reading the whole answer. `server CPU`
is the server process's user + system time over the row divided by its requests (all its
threads). The last column is what the answers report: the server's time decoding, and the
time of the batch each request was encoded and searched in (so it grows with the batches).

Reading them: a latency is CPU time plus time spent waiting (for a core, which other work
shares, or for Python's GIL): compare a row's latency with its CPU. The health row is the
cost of an HTTP round trip through uvicorn, the middleware and FastAPI with no work in it.
Concurrent
searches are encoded together (`serve/searcher.py`: the worker takes every search waiting
when it is free, up to 16), which is why the CPU per request falls as clients are added.

## Goals

{verdict(m)}
"""


def measure(setup: Setup, args: argparse.Namespace, work: Path) -> Measured:
    """``args.rounds`` rounds of: the library, then the server at each number of clients;
    the health round trip once, first."""
    port = free_port()
    server = start_server(setup.index_dir, port, work / "server.log", args.threads)
    per_round = args.seconds / args.rounds
    try:
        url = f"http://127.0.0.1:{port}"
        post = searches([p.read_bytes() for p in setup.films], args.k)
        health_run = drive(url, server.pid, 1, per_round, health)
        rounds: list[dict[str, Run]] = []
        runs: dict[int, list[Run]] = {n: [] for n in args.clients}
        for r in range(args.rounds):
            rounds.append(bare(setup, args.k, per_round))
            for n in args.clients:
                runs[n].append(drive(url, server.pid, n, per_round, post))
                print(f"round {r + 1}, {n} client(s): {runs[n][-1].throughput:.1f} req/s")
    finally:
        server.terminate()
        server.wait(timeout=30)
    pooled = [sum(rs[1:], rs[0]) for rs in runs.values()]
    return Measured(rounds, health_run, pooled)


def main(argv: list[str] | None = None) -> None:
    """Build the index, measure the library and the server, and write the page."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo", help="training profile of the model")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--films", type=int, default=300, help="phantom films indexed and uploaded")
    ap.add_argument("--source-px", type=int, default=128, help="side of the phantom PNGs")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=10.0, help="per row, over all rounds")
    ap.add_argument("--rounds", type=int, default=2, help="rounds the rows are measured in")
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
    if args.clients[0] != 1:
        ap.error("--clients must start with 1 (the reference of the throughput ratios)")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="cxrhash-service-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        setup = prepare(work, args.profile, args.epochs, args.films, args.source_px)
        measured = measure(setup, args, work)
    print(tables(measured))
    print(verdict(measured))
    args.out.write_text(page(setup, measured, args), encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
