"""``cxrhash index`` (build, append, verify) and ``cxrhash search``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cxrhash.cli.common import (
    DATA_HELP,
    command,
    console,
    err,
    fail,
    key_values,
    launch,
    setup_logging,
)
from cxrhash.cli.export import EngineOpt, OnnxOpt, OnnxThreadsOpt, engine_spec
from cxrhash.index.backends import backend_help, backend_params_help
from cxrhash.index.pacs_links import parse_link

if TYPE_CHECKING:
    from cxrhash.retrieve import IndexReport, QueryResult

_Checkpoint = Annotated[
    Path | None, typer.Option(help="Run directory or checkpoint file (not with --verify).")
]
_Data = Annotated[str | None, typer.Option(help=DATA_HELP + " Not with --verify.")]
_IndexOut = Annotated[
    Path | None, typer.Option("--out", "--index", help="Index directory (created, or appended to).")
]
_Verify = Annotated[
    bool,
    typer.Option(
        "--verify",
        help="Check the index at --out instead of adding to it: every shard's codes against "
        "their CRC-32s, every block of metadata rows (case ids, findings, patient pseudonyms, "
        "paths) against its SHA-256, and the removal record. Prints one OK line, or CORRUPT "
        "and the damaged files and rows, and exits 1.",
    ),
]
_Calibrate = Annotated[
    bool,
    typer.Option(
        "--calibrate",
        help="Re-make the closeness calibration of an existing index (--index/--out) from a "
        "seeded sample (≤ 4096) of the --data films encoded with --checkpoint (the index's "
        "model) by --engine; `cxrhash index` keeps it up to date by itself (docs/closeness.md).",
    ),
]
_Part = Annotated[
    str | None, typer.Option(help="Only this part of the run's split (train|val|query|database).")
]
_CommitEvery = Annotated[
    int, typer.Option(help="Images per atomic commit (an interrupted run resumes after it).")
]
_Nproc = Annotated[
    int,
    typer.Option(
        min=1,
        help="Encode in N worker processes on this machine (launches torchrun): each encodes "
        "the films whose case id hashes to it into a part index under --out/parts, then "
        "worker 0 merges the parts into --out. Re-running resumes every worker after its "
        "last commit. Several machines: torchrun --nnodes … -m cxrhash index … (docs/scale.md).",
    ),
]
_MaxRestarts = Annotated[
    int,
    typer.Option(help="With --nproc: restart the workers up to K times when one fails.", min=0),
]
_Backend = Annotated[str | None, typer.Option(help=backend_help())]
_BackendParam = Annotated[list[str] | None, typer.Option(help=backend_params_help())]
_ShardSize = Annotated[
    int | None, typer.Option(help="Most codes per shard file of a new index (default 2^22).")
]
_StoreFloats = Annotated[
    bool,
    typer.Option(
        "--store-floats",
        help="Create the index with a float store: each film's float outputs (float16, "
        "2·bits bytes per film beside its bits/8 bytes of code) for `search --rerank floats`. "
        "Chosen at creation only; an existing index keeps what it has.",
    ),
]
_KeepSourceNames = Annotated[
    bool,
    typer.Option(
        "--keep-source-names",
        help="Create the index keeping each film's case id (file name) and source path, shown "
        "by `search`. Without it (the default) case ids are stored and shown as keyed "
        "pseudonyms (c-…) and no paths are kept, because names and paths often identify the "
        "patient (docs/security.md). Chosen at creation only.",
    ),
]
_SearchCheckpoint = Annotated[
    Path | None, typer.Option(help="Model (default: the one that built the index).")
]
_Rerank = Annotated[
    str,
    typer.Option(
        help="Second stage over the --shortlist Hamming-nearest films: 'none' (default) keeps "
        "Hamming order, ties by index order; 'asymmetric' orders them by <f_q, b>, the query's "
        "float outputs against each film's ±1 code (nothing extra stored; tells apart unequal "
        "codes at one distance, not equal codes); 'floats' by cosine to each film's stored "
        "float outputs (an index made with --store-floats; also orders equal codes). Measured "
        "gains and costs: docs/search.md."
    ),
]
_Shortlist = Annotated[
    int | None,
    typer.Option(
        help="Hamming-nearest films re-ranked (L ≥ k; default max(10·k, 100)); ignored with "
        "--rerank none."
    ),
]
_Plot = Annotated[Path | None, typer.Option(help="Write a PNG: query, its heat-map, top hits.")]
_Heatmap = Annotated[
    str,
    typer.Option(
        help="The query's heat-map in --plot: 'attention' (the network's own attention map, "
        "default) or 'gradcam' (Grad-CAM of the findings it predicts; on phantom films its "
        "peak falls on a lesion more often than the attention's). Neither is a lesion "
        "detector: docs/benchmarks-notes.md."
    ),
]


@command()
def index(
    checkpoint: _Checkpoint = None,
    data: _Data = None,
    out: _IndexOut = None,
    verify: _Verify = False,
    calibrate: _Calibrate = False,
    part: _Part = None,
    batch_size: Annotated[int, typer.Option()] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    commit_every: _CommitEvery = 8192,
    backend: _Backend = None,
    backend_param: _BackendParam = None,
    shard_size: _ShardSize = None,
    store_floats: _StoreFloats = False,
    keep_source_names: _KeepSourceNames = False,
    engine: EngineOpt = "torch",
    onnx: OnnxOpt = None,
    onnx_threads: OnnxThreadsOpt = None,
    nproc: _Nproc = 1,
    max_restarts: _MaxRestarts = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Encode a dataset into a persistent Hamming index (appends; skips what is indexed).

    Patient ids, and case ids unless --keep-source-names, are stored as HMAC pseudonyms
    under a key kept outside the index (CXRHASH_PSEUDONYM_KEY, else the file
    CXRHASH_PSEUDONYM_KEY_FILE, else ~/.config/cxrhash/pseudonym.key, created on first
    use): the index folder alone identifies no one.

    Every image that cannot be read or decoded is skipped and listed with its reason.
    With --verify, check an existing index instead (exit 0: OK, 1: corrupt, 2: no index).
    With --calibrate, re-make its closeness calibration from the --data films instead.

    From a PACS (--data dicomweb:URL…), each film is keyed by its SOP Instance UID and keeps
    its WADO-RS URL; a completed run leaves a cursor in the index folder, so the next one
    lists only studies from the day before it on (docs/pacs.md). --workers are the
    parallel fetchers.
    """
    setup_logging(verbose)
    if verify:
        if out is None or checkpoint is not None or data is not None:
            fail("--verify takes the index folder (--index/--out) and no --checkpoint or --data")
        verify_index(out)
        return
    if checkpoint is None or data is None or out is None:
        fail("cxrhash index needs --checkpoint, --data and --out (or --verify --index DIR)")
    relaunch(nproc, max_restarts, calibrate)
    from cxrhash.bulk_index import IndexOptions
    from cxrhash.retrieve import checkpoint_dataset, recalibrate

    started, pacs = datetime.now(), data.startswith("dicomweb:")
    if pacs and not calibrate:
        from cxrhash.pacs_cursor import with_cursor

        data = with_cursor(data, out)
    spec = engine_spec(engine, onnx, onnx_threads)
    ckpt, dataset = checkpoint_dataset(checkpoint, data, part)
    if calibrate:
        n = recalibrate(ckpt, dataset, out, batch_size=batch_size, num_workers=workers, engine=spec)
        console.print(f"calibrated {out} on {n} films" if n else "too few films to calibrate")
        return
    options = IndexOptions(
        backend=backend,
        backend_params=key_values(backend_param or [], "--backend-param") or None,
        shard_size=shard_size,
        store_floats=True if store_floats else None,
        keep_source_names=True if keep_source_names else None,
    )
    report = encode_archive(
        ckpt, dataset, out, options, spec,
        batch_size=batch_size, num_workers=workers, commit_every=commit_every,
    )  # fmt: skip
    if report is None:  # a worker other than 0: worker 0 reports the whole run
        return
    print_index_report(report, out)
    if pacs:
        from cxrhash.pacs_cursor import save_cursor

        since = save_cursor(out, data, started)
        console.print(f"the next run over this source lists studies from {since} on")


def relaunch(nproc: int, max_restarts: int, calibrate: bool) -> None:
    """With ``--nproc`` N > 1, run this command in N workers under torchrun (and exit)."""
    from cxrhash.training import distributed

    if nproc > 1 and not distributed.requested():
        if calibrate:
            fail("--calibrate runs in one process: drop --nproc")
        launch(nproc, ("--nproc", "--max-restarts"), max_restarts)


def encode_archive(
    checkpoint: Path,
    dataset: Any,
    out: Path,
    options: Any,
    engine: Any,
    **encoding: Any,
) -> IndexReport | None:
    """Index ``dataset`` into ``out`` in this process, or as this worker of a distributed
    run (None on workers other than 0); the parts an interrupted distributed run left are
    merged first by a single process."""
    from cxrhash.bulk_index import build_index_distributed, merge_parts, part_dirs
    from cxrhash.retrieve import build_index
    from cxrhash.training import distributed

    if distributed.requested():
        return build_index_distributed(
            checkpoint, dataset, out, options=options, engine=engine, **encoding
        )
    if part_dirs(out):
        n = merge_parts(out)
        console.print(f"merged {n} films an interrupted run with --nproc had encoded")
    return build_index(
        checkpoint,
        dataset,
        out,
        backend=options.backend,
        backend_params=options.backend_params,
        shard_size=options.shard_size,
        store_floats=options.store_floats,
        keep_source_names=options.keep_source_names,
        engine=engine,
        **encoding,
    )


def print_index_report(report: IndexReport, out: Path, shown: int = 20) -> None:
    """The summary line, then the first ``shown`` unreadable files with their reasons."""
    console.print(
        f"added {report.added} images ({report.images_per_second:.1f} img/s), "
        f"{report.already_indexed} already indexed, {report.unreadable} unreadable skipped; "
        f"index {out} holds {report.total}"
    )
    for s in report.skipped[:shown]:
        err.print(f"  unreadable: {escape(str(s.path or s.case_id))}: {escape(s.reason)}")
    if report.unreadable > shown:
        err.print(f"  … and {report.unreadable - shown} more unreadable (see the log)")


def verify_index(path: Path) -> None:
    """``cxrhash index --verify``: one OK line, or CORRUPT and its problems then exit 1."""
    from cxrhash.index.store import HashIndex, IndexCorruptError

    try:
        with HashIndex.open(path, verify=False) as ix:
            report = ix.verify()
    except IndexCorruptError as exc:
        err.print(f"CORRUPT {path}: {exc}", markup=False, highlight=False)
        raise typer.Exit(code=1) from None
    for line in report.lines():
        (console if report.ok else err).print(line, soft_wrap=True, markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(code=1)


@command()
def search(
    images: Annotated[list[Path], typer.Argument(help="Query images (PNG, JPEG or DICOM).")],
    index_dir: Annotated[Path, typer.Option("--index", help="Index directory.")],
    k: Annotated[int, typer.Option("-k", help="Number of results per query.")] = 10,
    checkpoint: _SearchCheckpoint = None,
    rerank: _Rerank = "none",
    shortlist: _Shortlist = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: _Plot = None,
    heatmap: _Heatmap = "attention",
    engine: EngineOpt = "torch",
    onnx: OnnxOpt = None,
    onnx_threads: OnnxThreadsOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Top-k most similar indexed cases for each query image, with findings and distance.

    A query image that cannot be read (missing, unreadable, corrupt) is reported with its
    reason on stderr (with --json also as its entry's "error") and the others are still
    answered. Exit status: 0 when every query was searched, 1 when some query could not
    be read, 2 for a usage error or an index/model problem.
    """
    setup_logging(verbose)
    from cxrhash.retrieve import search_images

    results = search_images(
        images,
        index_dir,
        k=k,
        checkpoint=checkpoint,
        rerank=rerank,
        shortlist=shortlist,
        heatmap=heatmap,
        engine=engine_spec(engine, onnx, onnx_threads),
    )
    failed = [r for r in results if r.error is not None]
    if as_json:
        print(json.dumps([result_json(r) for r in results], indent=2))
    else:
        for r in results:
            if r.error is None:
                console.print(hits_table(r))
                console.print(closeness_line(r), markup=False, highlight=False)
    for r in failed:
        err.print(f"error: query {r.path}: {r.error}", markup=False, highlight=False)
    if plot is not None and len(failed) < len(results):
        from cxrhash.visualize import write_retrieval_figure

        write_retrieval_figure(results, plot)
        if not as_json:
            console.print(f"figure: {plot}")
    if failed:
        err.print(f"{len(failed)} of {len(results)} queries could not be read")
        raise typer.Exit(code=1)


def result_json(r: QueryResult) -> dict[str, Any]:
    """A query's JSON entry: ``error`` is null when it was searched, else why not."""
    return {
        "query": r.path,
        "error": r.error,
        "predicted": r.predicted,
        "closeness": None if r.closeness is None else r.closeness.as_dict(),
        "hits": [
            {
                "rank": h.rank + 1,
                "case_id": h.case_id,
                "distance": h.distance,
                "score": h.score,
                "findings": h.findings,
                "pacs": pacs_json(h.source_path),
            }
            for h in r.hits
        ],
    }


def pacs_json(source_path: str | None) -> dict[str, str | None] | None:
    """A hit's PACS location (UIDs and WADO-RS URL) when it was indexed over DICOMweb."""
    link = parse_link(source_path)
    return None if link is None else link.as_dict()


def closeness_line(r: QueryResult) -> str:
    """Whether the archive holds a close match to the query, in one sentence."""
    if r.closeness is None:
        return "closeness unknown: this index has no calibration (cxrhash index --calibrate)"
    return r.closeness.message


def hits_table(r: QueryResult) -> Table:
    """A query's hits: rank, case, Hamming distance, re-rank score if any, findings."""
    reranked = any(h.score is not None for h in r.hits)
    table = Table(title=f"query {r.path}")
    table.add_column("rank", justify="right")
    table.add_column("case")
    table.add_column("Hamming", justify="right")
    if reranked:
        table.add_column("re-rank score", justify="right")
    table.add_column("findings")
    links = [parse_link(h.source_path) for h in r.hits]
    if any(links):
        table.add_column("in the PACS (WADO-RS)", overflow="fold")
    for h, link in zip(r.hits, links, strict=True):
        score = [f"{h.score:.4f}"] if reranked and h.score is not None else []
        pacs = [(link.wado_url or link.path) if link else ""] if any(links) else []
        table.add_row(str(h.rank + 1), h.case_id, str(h.distance), *score, h.findings, *pacs)
    return table
