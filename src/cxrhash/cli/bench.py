"""``cxrhash bench``: methods × bits × seeds on one dataset, resumable, with its report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cxrhash.bench.grid import DEEP_BASELINES, PAPER_METHODS, SHALLOW
from cxrhash.cli.common import DATA_HELP, command, console, setup_logging
from cxrhash.config import PROFILES

_Out = Annotated[Path, typer.Option(help="Bench folder (runs, cached splits/features, report/).")]
_Data = Annotated[
    str | None, typer.Option(help=DATA_HELP + " Omit to score only --external codes.")
]
_Profile = Annotated[
    str, typer.Option(help=f"Training profile of every deep cell: {', '.join(PROFILES)}.")
]
_Methods = Annotated[str, typer.Option(help="Comma-separated deep methods ('' for none).")]
_Shallow = Annotated[
    str, typer.Option(help="Comma-separated shallow baselines on frozen features ('' for none).")
]
_Bits = Annotated[str, typer.Option(help="Comma-separated code lengths.")]
_Seeds = Annotated[str, typer.Option(help="Comma-separated seeds (split, init, order).")]
_Ablations = Annotated[
    bool, typer.Option(help="Add the attention-fusion and OSDH ablations (and scratch vs C2L).")
]
_AblationBits = Annotated[int, typer.Option(help="Code length of the ablation cells.")]
_Pretrained = Annotated[
    Path | None,
    typer.Option(
        help="Backbone weights (e.g. `cxrhash pretrain` OUT/backbone.pt) that initialise every "
        "deep cell; shallow baselines hash its frozen features; --pretrain-methods are also "
        "trained from scratch to measure what it buys."
    ),
]
_PretrainMethods = Annotated[
    str, typer.Option(help="Methods also trained from scratch when --pretrained is given.")
]
_External = Annotated[
    list[str] | None,
    typer.Option(
        help="NAME=DIR of another toolkit's codes (query_codes.npy, db_codes.npy, "
        "query_labels.npy, db_labels.npy; optional label_names.txt, and bits.txt when codes "
        "are uint8 0/1), scored like the grid's cells, `No Finding` class included. Repeatable."
    ),
]
_Jobs = Annotated[int, typer.Option(help="Cells run in parallel (threads split between them).")]
_Budget = Annotated[float | None, typer.Option(help="Start no new cell after this many minutes.")]

_ALL_DEEP = ",".join(PAPER_METHODS + DEEP_BASELINES)
_ALL_SHALLOW = ",".join(SHALLOW)


@command()
def bench(
    out: _Out,
    data: _Data = None,
    profile: _Profile = "bench",
    methods: _Methods = _ALL_DEEP,
    shallow: _Shallow = _ALL_SHALLOW,
    bits: _Bits = "16,32,64",
    seeds: _Seeds = "0,1,2",
    ablations: _Ablations = True,
    ablation_bits: _AblationBits = 32,
    pretrained: _Pretrained = None,
    pretrain_methods: _PretrainMethods = "attention-fusion,saliency-fusion",
    external: _External = None,
    jobs: _Jobs = 1,
    budget_minutes: _Budget = None,
    epochs: Annotated[int | None, typer.Option(help="Override the profile's epochs.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Override the profile's size.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Override the profile's backbone.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run methods × bits × seeds on one dataset and write Table 1/2, ablations and plots.

    Resumable: finished cells are kept in OUT/cells and skipped when the same
    command runs again; an interrupted training resumes from its last epoch.
    The report is OUT/report/report.md, report.html (one self-contained page),
    PNG plots and results.json.
    """
    setup_logging(verbose)
    from cxrhash.bench.runner import run_bench
    from cxrhash.bench.spec_text import bench_spec, external_dirs

    ext = external_dirs(external or [])
    if not data and not ext:
        raise ValueError("give --data (to run a grid) and/or --external NAME=DIR")
    spec = bench_spec(
        data,
        profile,
        methods=methods,
        shallow=shallow,
        bits=bits,
        seeds=seeds,
        ablations=ablations,
        ablation_bits=ablation_bits,
        pretrained=pretrained,
        pretrain_methods=pretrain_methods,
        overrides={"epochs": epochs, "image_size": image_size, "backbone": backbone},
    )
    summary = run_bench(
        spec,
        out,
        jobs=jobs,
        budget_minutes=budget_minutes,
        external=ext,
        progress=not quiet,
        command="cxrhash bench " + " ".join(sys.argv[2:]),
    )
    console.print(
        f"{summary['done']} cells in the report; {len(summary['pending'])} not run; "
        f"{len(summary['failed'])} failed"
    )
    console.print(f"report: {summary['report']}")
    if summary["failed"]:
        raise typer.Exit(code=1)
