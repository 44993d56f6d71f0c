"""``cxrhash eval``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cxrhash.cli.common import command, console, setup_logging

if TYPE_CHECKING:
    from cxrhash.evaluation.evaluate import ProtocolResult


@command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")],
    protocol: Annotated[
        str, typer.Option(help="literature (db = training images), strict, or both.")
    ] = "both",
    data: Annotated[str | None, typer.Option(help="Override the run's dataset spec.")] = None,
    random_seeds: Annotated[int, typer.Option(help="Seeds of the random-code reference.")] = 5,
    shortlist: Annotated[
        int | None,
        typer.Option(
            help="Hamming shortlist L of the two-stage rows (re-ranked by the query's float "
            "outputs, the rest of the database after it in Hamming order); default 1000 "
            "= max(10·100, 100)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    out: Annotated[Path | None, typer.Option(help="Where to write eval.json/eval.md.")] = None,
    batch_size: Annotated[int, typer.Option()] = 64,
    workers: Annotated[int, typer.Option()] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Every SPEC §6 metric of the codes, alone and re-ranked in two stages, beside the float
    upper bound, LSH and random codes; code rows give the share of distinct database codes."""
    setup_logging(verbose)
    from cxrhash.evaluation.evaluate import results_to_json
    from cxrhash.training.evaluate_run import evaluate_run

    protocols = ("literature", "strict") if protocol == "both" else (protocol,)
    results, facts = evaluate_run(
        checkpoint,
        protocols=protocols,
        data=data,
        batch_size=batch_size,
        num_workers=workers,
        random_seeds=random_seeds,
        shortlist=shortlist,
        out_dir=out,
        progress=not as_json,
    )
    if as_json:
        print(results_to_json(results, facts))
        return
    for res in results:
        console.print(_table(res))
    console.print(
        f"encode {facts['encode_ms_per_image']:.1f} ms/image; peak memory "
        f"{facts['peak_memory_mb']:.0f} MiB; written to {(out or Path(facts['checkpoint']).parent)}"
    )


def _table(res: ProtocolResult) -> Table:
    """One protocol's rows: the headline metrics with their distinct share."""
    from cxrhash.evaluation.evaluate import (
        COLUMN_TITLES,
        HEADLINE,
        format_value,
        with_distinct_share,
    )

    table = Table(
        title=f"{res.protocol}: {res.n_query} queries × {res.n_database} database "
        f"(two-stage shortlist L = {res.shortlist})"
    )
    table.add_column("codes")
    cols = [*with_distinct_share(HEADLINE), "mAP@100_minkR", "P@H<=2"]
    for c in cols:
        table.add_column(COLUMN_TITLES.get(c, c), justify="right")
    for name, row in res.rows.items():
        table.add_row(name, *[format_value(row, c, sep="±") for c in cols])
    return table
