"""Bench report figures: PR curves, metric vs code length, training loss, AP per finding.

Each function draws one matplotlib ``Figure`` from data already keyed by the
report's method label: ``cxrhash.bench.report_figures`` picks what to show, this module
decides how it looks. :func:`method_styles` gives a label the same colour and
line style in every figure. matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110
Style = dict[str, Any]  # Axes.plot keywords: "color" and "linestyle"
Stat = Mapping[str, float]  # {"mean", "std", "n"} over seeds
LossRun = tuple[Any, Sequence[Mapping[str, Any]]]  # (seed, [{"epoch", "loss_total", ...}])


def method_styles(kinds: Mapping[str, str]) -> dict[str, Style]:
    """One colour per label in the given order; shallow methods dashed, external ones dotted.

    Args:
        kinds: method label → kind (``deep``, ``shallow`` or ``external``), in table order.

    Returns:
        label → ``{"color", "linestyle"}``; colours from tab10 (tab20 beyond ten labels).
    """
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(kinds) <= 10 else "tab20"]
    dash = {"shallow": "--", "external": ":"}
    return {
        label: {"color": cmap(i % cmap.N), "linestyle": dash.get(kind, "-")}
        for i, (label, kind) in enumerate(kinds.items())
    }


def pr_curves_figure(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    bits: int,
    protocol: str,
    styles: Mapping[str, Style],
) -> Figure:
    """Precision against recall over Hamming radii, one line per label.

    Args:
        curves: label → ``{"precision": [...], "recall": [...]}`` (index = radius).
        bits: code length (title).
        protocol: evaluation protocol (title).
        styles: from :func:`method_styles`.
    """
    fig = _new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    for label, curve in curves.items():
        ax.plot(curve["recall"], curve["precision"], marker=".", ms=4, label=label, **styles[label])
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    _title_and_grid(ax, f"Hamming-radius PR curve, {bits} bits ({protocol}; mean over seeds)")
    _legend(fig, ax)
    return fig


def metric_vs_bits_figure(
    series: Mapping[str, Mapping[int, Mapping[str, Stat]]],
    metrics: Sequence[str],
    protocol: str,
    styles: Mapping[str, Style],
) -> Figure:
    """One panel per metric: mean ± std against code length (log₂ axis), one line per label.

    Args:
        series: label → bits → metric stats ``{metric: {"mean", "std", ...}}``.
        metrics: the metrics to draw, one panel each.
        protocol: evaluation protocol (titles).
        styles: from :func:`method_styles`.
    """
    all_bits = sorted({b for per in series.values() for b in per})
    fig = _new_figure(5.0 * len(metrics) + 2.0, 4.0)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for label, per in series.items():
            pts = [(b, per[b][metric]) for b in sorted(per) if metric in per[b]]
            if pts:
                ax.errorbar(
                    [b for b, _ in pts],
                    [s["mean"] for _, s in pts],
                    yerr=[s["std"] for _, s in pts],
                    marker="o",
                    ms=4,
                    capsize=3,
                    label=label,
                    **styles[label],
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_bits, [str(b) for b in all_bits])
        ax.minorticks_off()
        ax.set(xlabel="bits", ylabel=metric)
        _title_and_grid(ax, f"{metric} vs code length ({protocol}; ± std over seeds)")
    _legend(fig, axes[0])
    return fig


def loss_curves_figure(
    runs: Mapping[str, LossRun], bits: int, styles: Mapping[str, Style]
) -> Figure:
    """``loss_total`` per epoch, one small panel per run, at most four panels a row.

    Args:
        runs: label → (seed, history), in panel order; history entries hold
            ``epoch`` and ``loss_total``.
        bits: code length (title).
        styles: from :func:`method_styles` (colour only).
    """
    from matplotlib.ticker import MaxNLocator

    ncols = min(4, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    fig = _new_figure(3.2 * ncols, 2.5 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (label, (seed, history)) in zip(axes, runs.items(), strict=False):
        ax.plot(
            [h["epoch"] for h in history],
            [h["loss_total"] for h in history],
            marker="o",
            ms=3,
            color=styles[label]["color"],
        )
        ax.set_title(f"{label} (seed {seed})", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss_total", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    fig.suptitle(f"Training loss, {bits} bits", fontsize=10)
    return fig


def per_finding_ap_figure(
    aps: Mapping[str, Mapping[str, Stat]],
    findings: Sequence[str],
    bits: int,
    protocol: str,
    styles: Mapping[str, Style],
) -> Figure:
    """Grouped bars of mean AP per finding, one bar per label (0 where a label lacks the finding).

    Args:
        aps: label → finding → AP stats ``{"mean", ...}``.
        findings: the x-axis, in order.
        bits: code length (title).
        protocol: evaluation protocol (title).
        styles: from :func:`method_styles` (colour only).
    """
    width = 0.8 / len(aps)
    x = np.arange(len(findings))
    fig = _new_figure(min(20.0, 3.0 + 0.35 * len(findings) * max(1.0, len(aps) / 2)), 4.5)
    ax = fig.add_subplot()
    for i, (label, ap) in enumerate(aps.items()):
        stats = [ap.get(f) for f in findings]
        ax.bar(
            x + (i - (len(aps) - 1) / 2) * width,
            [s["mean"] if s else 0.0 for s in stats],
            width,
            label=label,
            color=styles[label]["color"],
        )
    ax.set_xticks(x, findings, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("AP")
    _title_and_grid(ax, f"AP per finding, {bits} bits ({protocol}; mean over seeds)", "y")
    _legend(fig, ax)
    return fig


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG at the report's resolution."""
    fig.savefig(path, dpi=DPI)


def _new_figure(width: float, height: float) -> Figure:
    # Figure (not pyplot) renders through Agg without touching global backend state.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _title_and_grid(ax: Axes, title: str, grid_axis: Literal["both", "x", "y"] = "both") -> None:
    ax.set_title(title, fontsize=10)
    ax.grid(axis=grid_axis, alpha=0.3)


def _legend(fig: Figure, ax: Axes) -> None:
    """One legend outside the plot, top right; none when nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
