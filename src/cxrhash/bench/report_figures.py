"""The bench report's figures: which data each one shows, drawn and saved as PNG blocks.

This module picks the data of each figure from the aggregate (main rows only, in
table order); ``cxrhash.bench.figures`` decides how it looks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrhash.bench.aggregate import (
    finite_number,
    group_key,
    known_first,
    main_bits,
    main_by_label,
    main_rows,
    row_label,
)
from cxrhash.bench.document import Image
from cxrhash.bench.figures import (
    LossRun,
    Style,
    loss_curves_figure,
    method_styles,
    metric_vs_bits_figure,
    per_finding_ap_figure,
    pr_curves_figure,
    save_png,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Drawn = list[tuple[Image, "Figure"]]


def draw_figures(
    cells: Sequence[Mapping[str, Any]], agg: Mapping[str, Any], bits: int, out_dir: Path
) -> list[Image]:
    """Draw and save every figure that has data; return the ones written, in report order.

    PR curves at every main bit length, mAP and nDCG@100 against bits, then the
    training loss and AP per finding at ``bits``.
    """
    styles = method_styles({row_label(r): r["kind"] for r in main_rows(agg)})
    drawn: Drawn = []
    drawn += _pr_curves(agg, styles)
    drawn += _metric_vs_bits(agg, styles)
    drawn += _loss_curves(cells, bits, styles)
    drawn += _per_finding_ap(agg, bits, styles)
    for image, fig in drawn:
        save_png(fig, out_dir / image.file)
    return [image for image, _ in drawn]


def _pr_curves(agg: Mapping[str, Any], styles: Mapping[str, Style]) -> Drawn:
    """One PR-curve figure per main bit length with a curve."""
    main = main_rows(agg)
    drawn: Drawn = []
    for b in main_bits(agg):
        curves = {row_label(r): r["pr_curve"] for r in main if r["bits"] == b and r["pr_curve"]}
        if curves:
            image = Image(f"pr_curves_{b}.png", f"PR curves at {b} bits")
            drawn.append((image, pr_curves_figure(curves, b, agg["protocol"], styles)))
    return drawn


def _metric_vs_bits(agg: Mapping[str, Any], styles: Mapping[str, Style]) -> Drawn:
    """mAP and nDCG@100 (those measured) against the code length."""
    methods = main_by_label(agg)
    series = {label: {b: r["metrics"] for b, r in per.items()} for label, per in methods.items()}
    metrics = [
        m
        for m in ("mAP", "nDCG@100")
        if any(m in ms for per in series.values() for ms in per.values())
    ]
    if not metrics:
        return []
    image = Image("map_vs_bits.png", "mAP and nDCG@100 vs bits")
    return [(image, metric_vs_bits_figure(series, metrics, agg["protocol"], styles))]


def _loss_curves(
    cells: Sequence[Mapping[str, Any]], bits: int, styles: Mapping[str, Style]
) -> Drawn:
    """The training loss of each main method at ``bits`` that has one, in table order."""
    runs = _loss_runs(cells, bits)
    runs = {label: runs[label] for label in styles if label in runs}
    if not runs:
        return []
    image = Image("loss_curves.png", f"training loss at {bits} bits")
    return [(image, loss_curves_figure(runs, bits, styles))]


def _per_finding_ap(agg: Mapping[str, Any], bits: int, styles: Mapping[str, Style]) -> Drawn:
    """AP per finding at ``bits``, findings in the dataset's label order."""
    aps = {
        row_label(r): r["per_finding_ap"]
        for r in main_rows(agg)
        if r["bits"] == bits and r["per_finding_ap"]
    }
    if not aps:
        return []
    findings = known_first((f for ap in aps.values() for f in ap), agg["label_names"])
    image = Image("per_finding_ap.png", f"AP per finding at {bits} bits")
    return [(image, per_finding_ap_figure(aps, findings, bits, agg["protocol"], styles))]


def _loss_runs(cells: Sequence[Mapping[str, Any]], bits: int) -> dict[str, LossRun]:
    """``{label: (seed, history)}`` of the lowest-seed main run at ``bits`` with a finite loss."""
    runs: dict[str, LossRun] = {}
    for cell in sorted(cells, key=lambda c: (c.get("seed") is None, c.get("seed") or 0)):
        group, method, variant, cell_bits = group_key(cell)
        if group != "main" or cell_bits != bits:
            continue
        history = [
            h for h in cell.get("history") or [] if finite_number(h.get("loss_total")) is not None
        ]
        label = row_label({"method": method, "variant": variant})
        if history and label not in runs:
            runs[label] = (cell.get("seed"), history)
    return runs
