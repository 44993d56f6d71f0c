"""Bulk encoding of an archive with 1 and N worker processes (issue #15, item 4).

Indexes the real films of ``../shared/data/cxr-unlabeled`` (6,054 radiographs, 128 px PNG;
described to cxrhash as an NIH-style folder written into the work directory) with
``cxrhash index`` in one process and with ``--nproc N``, by PyTorch and by ONNX Runtime,
each configuration a fresh index, rounds interleaved. It reports images/s over the
command's wall clock (start-up, listing, encoding, commits, merge, calibration: what a user
waits for) and the encoding throughput the command itself prints. It then times the merge
of a part into an index on synthetic codes (what worker 0 adds after the encoding) and the
index's bytes per film: the per-film costs of the 10^8-film plan in ``docs/scale.md``,
whose section between the markers it rewrites.

The models are the ``cpu-fast`` (ResNet-18, 64 px) and ``cpu`` (ResNet-18, 128 px) profiles
trained one epoch on phantom films: speed does not depend on how well a model ranks.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cxrhash.config import make_config
from cxrhash.data.phantom.folder import write_phantom_dataset
from cxrhash.index.codes import pack_codes
from cxrhash.index.merging import merge_index
from cxrhash.index.pseudonyms import Pseudonymizer
from cxrhash.index.store import HashIndex
from cxrhash.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cxr-unlabeled"
START, END = "<!-- bulk-encoding:start -->", "<!-- bulk-encoding:end -->"
RATE = re.compile(r"added (\d+) images \(([\d.]+) img/s\)")


def archive_as_nih(archive: Path, work: Path, films: int) -> Path:
    """An NIH-style ``labels.csv`` naming the first ``films`` PNGs of ``archive/images`` (one
    patient each, no findings), beside a link to that folder."""
    data = work / "archive"
    data.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in (archive / "images").iterdir() if p.suffix == ".png")[:films]
    if not (data / "images").exists():
        (data / "images").symlink_to(archive.resolve() / "images", target_is_directory=True)
    with open(data / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["Image Index", "Finding Labels", "Patient ID"])
        out.writerows([name, "No Finding", str(i)] for i, name in enumerate(names))
    return data


def model(work: Path, profile: str) -> tuple[Path, Path]:
    """``profile`` trained one epoch on 64 phantom films, and its ONNX graph (reused)."""
    run = work / f"run-{profile}"
    if not (run / "best.pt").is_file():
        size = make_config(profile).image_size
        phantom = write_phantom_dataset(work / f"phantom-{size}", 64, size, seed=1)
        train(make_config(profile, data=f"phantom:{phantom}", epochs=1), run, progress=False)
    onnx = run / "best.onnx"
    if not onnx.is_file():
        cli("export", "--checkpoint", str(run / "best.pt"), "--out", str(onnx))
    return run / "best.pt", onnx


def cli(*args: str) -> str:
    """Run ``python -m cxrhash ARGS``; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "cxrhash", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"cxrhash {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def index_once(
    checkpoint: Path, onnx: Path | None, data: Path, out: Path, nproc: int, batch: int
) -> tuple[float, float, int, float]:
    """A fresh ``cxrhash index``, then the same command again (nothing left to encode):
    (wall-clock img/s, the command's encoding img/s, films, seconds of the second run)."""
    args = ["index", "--checkpoint", str(checkpoint), "--data", f"nih:{data}", "--out", str(out)]
    args += ["--batch-size", str(batch), "--nproc", str(nproc)]
    if onnx is not None:
        args += ["--engine", "onnx", "--onnx", str(onnx)]
    t0 = time.perf_counter()
    output = cli(*args)
    wall = time.perf_counter() - t0
    found = RATE.search(output)
    if found is None:
        raise RuntimeError(f"no report line in:\n{output}")
    t0 = time.perf_counter()
    cli(*args)
    again = time.perf_counter() - t0
    films = int(found[1])
    return films / wall, float(found[2]), films, again


def decode_costs(repeats: int = 10) -> dict[str, float]:
    """Milliseconds to read and resize one full-size film to 224 px (median of ``repeats``):
    an NIH-style 1024² 8-bit PNG and a 2500×2048 12-bit uncompressed DICOM (a CR/DX film
    as a PACS stores it), smooth noise standing in for anatomy."""
    from dicomweb import dx_film  # benchmarks/dicomweb.py: a DX DICOM of given pixels
    from PIL import Image

    from cxrhash.data.images import load_resized

    rng = np.random.default_rng(0)
    costs = {}
    with tempfile.TemporaryDirectory() as tmp:
        png, dcm = Path(tmp) / "film.png", Path(tmp) / "film.dcm"
        small = rng.random((1024 // 16, 1024 // 16))
        Image.fromarray((np.kron(small, np.ones((16, 16))) * 255).astype(np.uint8)).save(png)
        big = np.kron(rng.random((2500 // 20, 2048 // 16)), np.ones((20, 16)))
        dcm.write_bytes(dx_film(big, 0))
        for name, path in (("PNG 1024² 8-bit", png), ("DICOM 2500×2048 12-bit", dcm)):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                load_resized(path, 224)
                times.append(time.perf_counter() - t0)
            costs[name] = 1000 * float(np.median(times))
    return costs


def merge_cost(rows: int, bits: int = 64) -> tuple[float, float]:
    """Seconds per film to merge a part of ``rows`` films into an index of as many, and the
    index's bytes per film on disk (codes, metadata with pseudonyms and findings)."""
    key = Pseudonymizer(os.urandom(32))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        made = []
        for name, first in (("index", 0), ("part", rows)):
            ix = HashIndex.create(Path(tmp) / name, bits, "bench", pseudonymizer=key)
            for lo in range(0, rows, 1 << 16):
                n = min(1 << 16, rows - lo)
                ix.add(
                    pack_codes(rng.random((n, bits)) < 0.5),
                    case_ids=[f"film-{first + lo + i}" for i in range(n)],
                    findings=["Effusion|Mass"] * n,
                    patient_ids=[f"patient-{(first + lo + i) // 3}" for i in range(n)],
                )
            made.append(ix)
        target, part = made
        t0 = time.perf_counter()
        merge_index(target, part)
        seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (Path(tmp) / "index").rglob("*") if p.is_file())
        for ix in made:
            ix.close()
        return seconds / rows, size / (2 * rows)


Results = dict[tuple[str, str, int], list[tuple[float, float, int, float]]]


def table(results: Results, nprocs: list[int]) -> str:
    """Markdown: per profile and engine, img/s at each worker count (median over rounds)."""
    lines = [
        "| model | engine | workers | films | img/s, wall clock | img/s, encoding (as printed) "
        "| × 1 worker (wall) | re-run, nothing new (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (profile, engine, nproc), runs in results.items():
        wall = float(np.median([r[0] for r in runs]))
        enc = float(np.median([r[1] for r in runs]))
        base = float(np.median([r[0] for r in results[(profile, engine, nprocs[0])]]))
        spread = f" ({min(r[0] for r in runs):.1f}–{max(r[0] for r in runs):.1f})"
        lines.append(
            f"| {profile} | {engine} | {nproc} | {runs[0][2]} | {wall:.1f}{spread} | {enc:.1f} | "
            f"{wall / base:.2f} | {float(np.median([r[3] for r in runs])):.1f} |"
        )
    return "\n".join(lines)


def write_section(out: Path, body: str, argv: list[str]) -> None:
    """Put ``body`` between the markers of ``out`` (the rest of the page is hand-written)."""
    load = os.getloadavg()[0]
    header = (
        "Generated by `benchmarks/bulk_index.py` (do not edit between the markers); command: "
        f"`{' '.join(['python', 'benchmarks/bulk_index.py', *argv])}`. {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, load average {load:.1f} at the end."
    )
    text = out.read_text(encoding="utf-8") if out.is_file() else "# Scale\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    out.write_text(f"{head}{START}\n{header}\n\n{body}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help="a folder with images/")
    parser.add_argument("--films", type=int, default=6054, help="archive films indexed")
    parser.add_argument("--profile", action="append", help="cpu-fast and/or cpu (default both)")
    parser.add_argument("--nproc", type=int, action="append", help="worker counts (default 1, 2)")
    parser.add_argument("--engine", action="append", help="torch and/or onnx (default both)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--merge-rows", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bulk-bench")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "scale.md")
    args = parser.parse_args(argv)
    profiles = args.profile or ["cpu-fast", "cpu"]
    nprocs, engines = args.nproc or [1, 2], args.engine or ["torch", "onnx"]
    if not (args.archive / "images").is_dir():
        sys.exit(f"{args.archive}/images not found: this benchmark indexes its films")
    data = archive_as_nih(args.archive, args.work, args.films)
    results: Results = {}
    for profile in profiles:
        checkpoint, onnx = model(args.work, profile)
        for r in range(args.rounds):
            for engine in engines:
                for nproc in nprocs:
                    out = args.work / f"index-{profile}-{engine}-{nproc}-{r}"
                    subprocess.run(["rm", "-rf", str(out)], check=True)
                    got = index_once(
                        checkpoint, onnx if engine == "onnx" else None, data, out, nproc, args.batch
                    )
                    subprocess.run(["rm", "-rf", str(out)], check=True)
                    results.setdefault((profile, engine, nproc), []).append(got)
                    rates = f"{got[0]:.1f} img/s wall, {got[1]:.1f} encoding"
                    print(profile, engine, nproc, rates, flush=True)
    per_film, size = merge_cost(args.merge_rows)
    print(f"merge: {per_film * 1e6:.1f} µs/film; index: {size:.0f} bytes/film", flush=True)
    body = table(results, nprocs) + (
        f"\n\nMerging a part of {args.merge_rows:,} films (64 bits, pseudonymous ids, one "
        f"finding string) into an index of as many: **{per_film * 1e6:.1f} µs per film** "
        f"(worker 0, after the encoding). The index on disk: **{size:.0f} bytes per film** "
        "(8 of them the code; the rest SQLite metadata: pseudonymous case and patient ids, "
        "findings, and its unique index on case ids)."
    )
    decode = decode_costs()
    print("decode:", decode, flush=True)
    body += (
        "\n\nReading and resizing one full-size film to 224 px, one core: "
        + ", ".join(f"{name} **{ms:.0f} ms**" for name, ms in decode.items())
        + " (median of 10; uncompressed: a JPEG 2000 DICOM costs several times more)."
    )
    write_section(args.out, body, sys.argv[1:] if argv is None else argv)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
