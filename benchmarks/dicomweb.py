"""Indexing a PACS over DICOMweb: instances/s from a local Orthanc at 1, 2 and 4 parallel
fetchers, with the time of one instance split into fetch (WADO-RS), decode, encode and write.

Starts our own Orthanc on loopback (Debian's ``orthanc`` + ``orthanc-dicomweb``, as the tests
do), stores ``--films`` DX films in it (phantom radiographs written as 12-bit DICOM of
``--side`` px), trains the ``demo`` profile briefly (speed does not depend on how well it
retrieves), then:

* splits one instance's cost in-process, one instance at a time: the WADO-RS retrieve
  (``dicomweb-client``), the decode (the project's one DICOM decode path), the encode (the
  model on a batch of ``--batch-size``, per film) and the write (one atomic ``add`` of them
  all, as ``build_index`` commits every 8192 films, per film);
* times ``build_index`` end to end into a fresh index with 1, 2 and 4 fetchers
  (``DataLoader`` worker processes, each with its own HTTP session; the main process encodes
  and writes), ``--rounds`` times each.

Writes its tables between the markers of ``docs/pacs.md`` (``--out``) and prints them.

    python benchmarks/dicomweb.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxrhash.config import make_config
from cxrhash.data.dicom import read_dicom_dataset
from cxrhash.data.dicomweb import DicomWebSource
from cxrhash.data.images import load_image, resize_square
from cxrhash.data.phantom import write_phantom_dataset
from cxrhash.data.readers import open_dataset
from cxrhash.index.codes import pack_codes
from cxrhash.index.store import HashIndex
from cxrhash.retrieve import build_index
from cxrhash.training.checkpoint import load_checkpoint, load_model
from cxrhash.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.pacs.orthanc_server import OrthancServer, find_orthanc, start_orthanc  # noqa: E402

DOCS = REPO / "docs" / "pacs.md"
START, END = "<!-- benchmarks/dicomweb.py: start -->", "<!-- benchmarks/dicomweb.py: end -->"
PASSWORD_ENV = "CXRHASH_BENCH_ORTHANC_PASSWORD"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def dx_film(pixels: np.ndarray, i: int) -> bytes:
    """A 12-bit DX DICOM of ``pixels`` (in [0, 1]) with fresh UIDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.StudyDate = "DX", "CHEST", "20240301"
    ds.PatientID, ds.PatientName = f"BENCH{i:06d}", f"Bench^Patient{i}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.round(pixels * 4095).astype(np.uint16).tobytes()
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def fill(server: OrthancServer, folder: Path, n: int, side: int) -> None:
    """``n`` phantom films stored in Orthanc as ``side``-px DX DICOMs."""
    films = sorted((folder / "images").glob("*.png"))
    for i in range(n):
        grey = resize_square(load_image(films[i % len(films)]), side)
        server.upload(dx_film(grey, i))


def model(work: Path, data: Path, profile: str) -> Path:
    """``profile`` trained one epoch on the phantom films (reused if there)."""
    run = work / "run"
    if not (run / "best.pt").is_file():
        train(make_config(profile, data=f"phantom:{data}", epochs=1), run, progress=False)
    return run / "best.pt"


@dataclass
class Split:
    """Seconds per instance of each stage, one instance at a time."""

    fetch: float
    decode: float
    encode: float
    write: float


def split(spec: str, checkpoint: Path, work: Path, n: int, batch: int) -> Split:
    """Each stage timed on its own over ``n`` instances (encode and write per batch)."""
    source = DicomWebSource(spec)
    refs = list(source.instances())[:n]
    net, payload = load_model(checkpoint)
    size = payload["config"]["image_size"]
    t_fetch = t_decode = 0.0
    images = []
    for ref in refs:
        t0 = time.perf_counter()
        ds = source.client.retrieve_instance(ref.study_uid, ref.series_uid, ref.sop_uid)
        t1 = time.perf_counter()
        images.append(resize_square(read_dicom_dataset(ds, "bench"), size))
        t_fetch, t_decode = t_fetch + t1 - t0, t_decode + time.perf_counter() - t1
    with torch.inference_mode():  # warm-up: the first forward pass allocates
        net(torch.from_numpy(np.stack(images[:batch])[:, None]))
    t_encode, codes = 0.0, []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.stack(images[start : start + batch])[:, None])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = net(x)
        codes.append(pack_codes(out.hash.float().numpy() >= 0))
        t_encode += time.perf_counter() - t0
    with HashIndex.create(work / "split-idx", payload["config"]["bits"], "bench") as index:
        t0 = time.perf_counter()  # one atomic commit, as build_index's (every 8192 films)
        index.add(np.concatenate(codes), [r.sop_uid for r in refs], [""] * len(refs))
        t_write = time.perf_counter() - t0
    k = len(refs)
    return Split(t_fetch / k, t_decode / k, t_encode / k, t_write / k)


def end_to_end(spec: str, checkpoint: Path, work: Path, fetchers: int, batch: int) -> float:
    """Instances/s of ``build_index`` into a fresh index with ``fetchers`` workers."""
    out = work / f"idx-{fetchers}-{time.monotonic_ns()}"
    size = load_checkpoint(checkpoint)["config"]["image_size"]
    dataset = open_dataset(spec, size)
    t0 = time.perf_counter()
    report = build_index(
        checkpoint, dataset, out, batch_size=batch, num_workers=fetchers, progress=False
    )
    seconds = time.perf_counter() - t0
    assert report.added == len(dataset), report
    return report.added / seconds


def tables(s: Split, rates: dict[int, list[float]], films: int, side: int) -> str:
    total = s.fetch + s.decode + s.encode + s.write
    lines = [
        f"One instance at a time, in-process ({films} films of {side}×{side} px, 12 bits):",
        "",
        "| stage | ms per instance | share |",
        "|---|---|---|",
    ]
    for name, value in (
        ("fetch (WADO-RS)", s.fetch),
        ("decode", s.decode),
        ("encode", s.encode),
        ("write", s.write),
    ):
        lines.append(f"| {name} | {1000 * value:.2f} | {value / total:.0%} |")
    lines.append(f"| **total** | **{1000 * total:.2f}** | 100 % |")
    lines += [
        "",
        "`build_index` end to end (listing, fetch, decode, encode, write, calibration):",
        "",
        "| parallel fetchers | instances/s (each round) | best | × 1 fetcher |",
        "|---|---|---|---|",
    ]
    base = max(rates[min(rates)])
    for n, values in rates.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"| {n} | {each} | {max(values):.1f} | {max(values) / base:.2f} |")
    return "\n".join(lines)


def write_page(out: Path, body: str, args: argparse.Namespace) -> None:
    """Put ``body`` between the markers of ``out`` (the rest of the page is hand-written)."""
    cores = os.cpu_count()
    header = (
        f"Generated by `benchmarks/dicomweb.py` (do not edit between the markers); command: "
        f"`python benchmarks/dicomweb.py {' '.join(args.argv)}`. {platform.machine()}, "
        f"{cores} cores shared with other work, torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s); Orthanc on loopback; the `{args.profile}` "
        "profile, trained one epoch on phantom films."
    )
    block = f"{START}\n{header}\n\n{body}\n{END}"
    text = out.read_text(encoding="utf-8") if out.is_file() else f"# PACS\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    out.write_text(head + block + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Start Orthanc, fill it, measure, write the page."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--films", type=int, default=300, help="instances stored in Orthanc")
    ap.add_argument("--side", type=int, default=512, help="side of the DICOM films, px")
    ap.add_argument("--fetchers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--profile", default="demo", help="training profile of the model")
    ap.add_argument("--train-films", type=int, default=300, help="phantom films trained on")
    ap.add_argument("--work", type=Path, default=None, help="folder for data, model, indexes")
    ap.add_argument("--out", type=Path, default=DOCS)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    found = find_orthanc()
    if found is None:
        raise SystemExit("needs Debian's orthanc and orthanc-dicomweb (see docs/pacs.md)")
    with tempfile.TemporaryDirectory(prefix="cxrhash-dicomweb-bench-") as tmp:
        work = args.work or Path(tmp)
        data = work / "data"
        if not (data / "labels.csv").is_file():
            write_phantom_dataset(data, args.train_films, 128, seed=0)
        checkpoint = model(work, data, args.profile)
        server = start_orthanc(*found)
        try:
            fill(server, data, args.films, args.side)
            os.environ[PASSWORD_ENV] = server.password
            spec = f"dicomweb:{server.dicomweb_url}?user={server.user}&password_env={PASSWORD_ENV}"
            stages = split(spec, checkpoint, work, min(args.films, 100), args.batch_size)
            rates: dict[int, list[float]] = {n: [] for n in args.fetchers}
            for r in range(args.rounds):
                for n in args.fetchers:
                    rates[n].append(end_to_end(spec, checkpoint, work, n, args.batch_size))
                    print(f"round {r + 1}, {n} fetcher(s): {rates[n][-1]:.1f} instances/s")
        finally:
            server.stop()
    body = tables(stages, rates, args.films, args.side)
    print(body)
    write_page(args.out, body, args)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
