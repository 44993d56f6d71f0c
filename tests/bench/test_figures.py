"""Bench figures: the drawn artists carry exactly the numbers and styles they were given."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from cxrhash.bench.figures import (
    DPI,
    loss_curves_figure,
    method_styles,
    metric_vs_bits_figure,
    per_finding_ap_figure,
    pr_curves_figure,
    save_png,
)

KINDS = {"attention-fusion": "deep", "itq": "shallow", "ext:toolkit": "external"}


def _stat(mean: float, std: float = 0.0) -> dict[str, float]:
    return {"mean": mean, "std": std, "n": 3}


def test_method_styles_one_colour_per_label_and_dash_per_kind() -> None:
    styles = method_styles(KINDS)
    tab10 = matplotlib.colormaps["tab10"]
    assert list(styles) == list(KINDS)
    assert [s["color"] for s in styles.values()] == [tab10(i) for i in range(3)]
    assert [s["linestyle"] for s in styles.values()] == ["-", "--", ":"]
    many = method_styles({f"m{i}": "deep" for i in range(11)})
    assert len({s["color"] for s in many.values()}) == 11  # tab10 would repeat a colour


def test_pr_curves_plot_precision_against_recall() -> None:
    rng = np.random.default_rng(0)
    curves = {
        label: {"precision": rng.uniform(0, 1, 5).tolist(), "recall": rng.uniform(0, 1, 5).tolist()}
        for label in KINDS
    }
    styles = method_styles(KINDS)
    fig = pr_curves_figure(curves, 32, "strict", styles)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == list(KINDS)
    for line, (label, curve) in zip(ax.lines, curves.items(), strict=True):
        np.testing.assert_array_equal(line.get_xdata(), curve["recall"])
        np.testing.assert_array_equal(line.get_ydata(), curve["precision"])
        assert line.get_color() == styles[label]["color"]
        assert line.get_linestyle() == styles[label]["linestyle"]
    assert "32 bits" in ax.get_title() and "strict" in ax.get_title()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(KINDS)


def test_metric_vs_bits_draws_mean_with_std_bars_per_panel() -> None:
    series = {
        "attention-fusion": {16: {"mAP": _stat(0.5, 0.02)}, 64: {"mAP": _stat(0.7, 0.01)}},
        "itq": {32: {"mAP": _stat(0.3, 0.05), "nDCG@100": _stat(0.4, 0.03)}},
    }
    fig = metric_vs_bits_figure(series, ["mAP", "nDCG@100"], "literature", method_styles(KINDS))
    map_ax, ndcg_ax = fig.axes
    assert map_ax.get_xscale() == "log"
    assert [t.get_text() for t in map_ax.get_xticklabels()] == ["16", "32", "64"]
    af, itq = map_ax.containers
    data, _, (bars,) = af.lines
    np.testing.assert_array_equal(data.get_xydata(), [[16, 0.5], [64, 0.7]])
    np.testing.assert_allclose(
        [seg[:, 1] for seg in bars.get_segments()], [[0.48, 0.52], [0.69, 0.71]]
    )
    (only,) = ndcg_ax.containers  # attention-fusion has no nDCG@100: no line
    np.testing.assert_array_equal(only.lines[0].get_xydata(), [[32, 0.4]])
    assert only.get_label() == "itq" and ndcg_ax.get_ylabel() == "nDCG@100"


def test_loss_curves_one_panel_per_run_and_spare_panels_hidden() -> None:
    labels = [f"m{i}" for i in range(5)]
    runs = {
        label: (i, [{"epoch": e, "loss_total": 1.0 / (e + i)} for e in range(1, 4)])
        for i, label in enumerate(labels)
    }
    fig = loss_curves_figure(runs, 16, method_styles(dict.fromkeys(labels, "deep")))
    assert len(fig.axes) == 8  # 2 rows of at most 4 panels
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [f"m{i} (seed {i})" for i in range(5)]
    for ax, (_, history) in zip(visible, runs.values(), strict=True):
        (line,) = ax.lines
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
        np.testing.assert_array_equal(line.get_ydata(), [h["loss_total"] for h in history])
    assert fig.get_suptitle() == "Training loss, 16 bits"


def test_per_finding_ap_bars_centred_per_finding_zero_when_missing() -> None:
    findings = ["Atelectasis", "Effusion", "No Finding"]
    aps = {
        "attention-fusion": {f: _stat(0.1 * (i + 1)) for i, f in enumerate(findings)},
        "itq": {"Effusion": _stat(0.9)},
    }
    fig = per_finding_ap_figure(aps, findings, 32, "strict", method_styles(KINDS))
    (ax,) = fig.axes
    bars = ax.patches
    assert [b.get_height() for b in bars] == pytest.approx([0.1, 0.2, 0.3, 0.0, 0.9, 0.0])
    centres = np.array([b.get_x() + b.get_width() / 2 for b in bars]).reshape(2, 3)
    np.testing.assert_allclose(centres.mean(axis=0), [0, 1, 2])  # the pair straddles each tick
    assert centres[0, 0] < centres[1, 0]
    assert [t.get_text() for t in ax.get_xticklabels()] == findings


def test_save_png_writes_a_png_at_the_report_dpi(tmp_path: Path) -> None:
    fig = pr_curves_figure(
        {"itq": {"precision": [1.0, 0.5], "recall": [0.1, 0.9]}}, 8, "strict", method_styles(KINDS)
    )
    save_png(fig, tmp_path / "f.png")
    with Image.open(tmp_path / "f.png") as img:
        assert img.format == "PNG"
        assert img.size == (round(7.5 * DPI), round(4.5 * DPI))
