"""The bench report: Markdown, PNG figures, one self-contained HTML page and ``results.json``.

``cxrhash bench`` writes one JSON dict per finished (method, variant, bits, seed)
cell; :func:`write_report` turns a list of them into a report folder. The work
is split by job: ``aggregate`` (statistics over seeds, paired differences),
``tables`` and ``report_figures`` (the blocks of the ``document`` model built
from the aggregates), ``render_markdown`` and ``render_html`` (one document,
two renderings). This module lays the sections out in order and writes the files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cxrhash.bench.aggregate import (
    NO_CELLS,
    PRIMARY,
    aggregate,
    closest_bits,
    main_bits,
    protocols,
    standing,
)
from cxrhash.bench.document import Block, Code, Facts, Heading, Image, Notes, Text
from cxrhash.bench.render_html import render_html
from cxrhash.bench.render_markdown import render_markdown
from cxrhash.bench.report_figures import draw_figures
from cxrhash.bench.tables import (
    DASH,
    STD_NOTE,
    ablation_tables,
    efficiency_table,
    full_tables,
    metric_by_bits_tables,
    standing_table,
)

LOG = logging.getLogger(__name__)

PROTOCOL_TEXT = {
    "strict": "queries and database both unseen and patient-disjoint from training",
    "literature": "queries unseen in training, database = the training images "
    "(what the papers report)",
}


def write_report(
    cells: list[dict[str, Any]],
    out_dir: Path,
    *,
    title: str,
    command: str,
    notes: str = "",
    protocol: str = "strict",
) -> Path:
    """Write ``report.md``, ``report.html``, the PNG figures and ``results.json`` into ``out_dir``.

    Args:
        cells: bench cell dicts, one per finished (method, variant, bits, seed).
        out_dir: report folder (created if missing).
        title: report title.
        command: the exact command that produced the cells (printed in the header).
        notes: Markdown appended at the end.
        protocol: the protocol of the full tables and figures; other protocols
            present get the headline tables only.

    Returns:
        Path of ``report.html``.

    Raises:
        ValueError: no cells, or no cell has metrics for ``protocol``.
    """
    if not cells:
        raise ValueError(NO_CELLS)
    found = protocols(cells)
    if protocol not in found:
        raise ValueError(f"no cell has metrics for protocol {protocol!r}; found: {found or 'none'}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    aggs = {p: aggregate(cells, p) for p in found}
    agg = aggs[protocol]
    figures = draw_figures(cells, agg, _focus_bits(agg), out_dir)
    blocks = report_blocks(
        cells, aggs, protocol, title=title, command=command, notes=notes, figures=figures
    )
    (out_dir / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    standings = {p: standing(cells, p) for p in found}
    (out_dir / "results.json").write_text(
        json.dumps(
            {"title": title, "command": command, "protocols": aggs, "standing": standings},
            indent=2,
        ),
        encoding="utf-8",
    )
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(blocks, title, out_dir), encoding="utf-8")
    LOG.info("bench report written to %s", out_dir)
    return html_path


def report_blocks(
    cells: Sequence[Mapping[str, Any]],
    aggs: Mapping[str, Mapping[str, Any]],
    protocol: str,
    *,
    title: str,
    command: str,
    notes: str,
    figures: list[Image],
) -> list[Block]:
    """The report in order: header, Table 1 (and the other protocols' headline tables),
    Table 3, Table 2, ablations, figures, notes; a section without data is left out."""
    agg = aggs[protocol]
    n_total = len(agg["seeds"])
    blocks: list[Block] = [
        Heading(1, title),
        Text("Command:"),
        Code(command),
        _facts(agg, n_total),
        Heading(2, f"Table 1: retrieval quality ({protocol})"),
        *metric_by_bits_tables(agg, "1", n_total),
        Heading(3, f"All metrics per code length ({protocol})"),
        *full_tables(agg, n_total),
    ]
    for i, other in enumerate(p for p in aggs if p != protocol):
        blocks += [
            Heading(3, f"Headline metrics, {other} protocol"),
            Text(f"{other}: {_protocol_text(other)}."),
            *metric_by_bits_tables(aggs[other], f"1.{i + 1}", n_total),
        ]
    standing_ = standing_table(cells, protocol)
    if standing_ is not None:
        blocks += [Heading(2, f"Table 3: where {PRIMARY} stands ({protocol})"), standing_]
    blocks += [Heading(2, "Table 2: efficiency"), efficiency_table(agg, _focus_bits(agg))]
    ablations = ablation_tables(agg, n_total)
    if ablations:
        blocks += [Heading(2, "Ablations"), *ablations]
    if figures:
        blocks += [Heading(2, "Figures"), *figures]
    if notes.strip():
        blocks += [Heading(2, "Notes"), Notes(notes)]
    return blocks


def _facts(agg: Mapping[str, Any], n_total: int) -> Facts:
    """The header's list: datasets, cell counts, seeds, bits, protocol, statistics."""
    n_ablation = sum(r["n_seeds"] for r in agg["rows"] if r["group"] == "ablation")
    n_main = agg["n_cells"] - n_ablation
    return Facts(
        [
            ("dataset(s)", ", ".join(agg["datasets"]) or DASH),
            ("cells", f"{agg['n_cells']} ({n_main} main, {n_ablation} ablation)"),
            ("seeds", ", ".join(str(s) for s in agg["seeds"]) or DASH),
            ("bits", ", ".join(str(b) for b in agg["bits"])),
            ("protocol", f"{agg['protocol']}: {_protocol_text(agg['protocol'])}"),
            ("statistics", f"{STD_NOTE}; (n=k) marks a figure from only k of the {n_total} seeds"),
        ]
    )


def _focus_bits(agg: Mapping[str, Any]) -> int:
    """The code length of Table 2 and of the single-length figures: the main one nearest 32."""
    return closest_bits(main_bits(agg) or agg["bits"])


def _protocol_text(protocol: str) -> str:
    return PROTOCOL_TEXT.get(protocol, "as defined by the bench")
