"""The bench report: Markdown, PNG figures, one self-contained HTML page and ``results.json``.

``cxrhash bench`` writes one JSON dict per finished (method, variant, bits, seed)
cell; :func:`write_report` turns a list of them into a report folder. Every
figure and table is built from :func:`aggregate` (mean, population std and
count over seeds), so ``report.md``, ``report.html`` and ``results.json`` always
agree. The Markdown and the HTML page are rendered from one list of blocks.
This module picks the data of each figure; ``cxrhash.bench.figures`` draws it.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrhash.bench.figures import (
    LossRun,
    loss_curves_figure,
    method_styles,
    metric_vs_bits_figure,
    per_finding_ap_figure,
    pr_curves_figure,
    save_png,
)
from cxrhash.bench.grid import AF_ABLATIONS, DEEP_BASELINES, OSDH_ABLATIONS, PAPER_METHODS
from cxrhash.bench.grid import SHALLOW as SHALLOW_METHODS
from cxrhash.evaluation.evaluate import (
    COLUMN_TITLES,
    DISTINCT_CODES,
    DISTINCT_SHARE,
    HEADLINE,
    ROW_ASYMMETRIC,
    ROW_FLOAT,
    ROW_LSH,
    ROW_RANDOM,
    ROW_STORED_FLOATS,
    with_distinct_share,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOG = logging.getLogger(__name__)

METHOD_ORDER = PAPER_METHODS + DEEP_BASELINES + SHALLOW_METHODS
PRIMARY = PAPER_METHODS[0]  # attention-fusion, the method the standing table is about
REFERENCE_ROWS = (ROW_FLOAT, ROW_STORED_FLOATS, ROW_ASYMMETRIC, ROW_LSH, ROW_RANDOM)
AF_VARIANTS = ("full", *AF_ABLATIONS)
OSDH_VARIANTS = tuple(OSDH_ABLATIONS)
PRETRAIN_VARIANTS = ("c2l", "scratch")
_DEFAULT_VARIANTS = ("", "full")  # a main-table row without a variant suffix
# efficiency key → (column title, number format)
EFFICIENCY = {
    "feature_ms_per_image": ("feature ms/image", ".2f"),
    "retrieval_ms_per_query": ("retrieval ms/query", ".3f"),
    "train_seconds": ("training time (s)", ".1f"),
    "peak_memory_mb": ("peak memory (MiB)", ".0f"),
}
PROTOCOL_TEXT = {
    "strict": "queries and database both unseen and patient-disjoint from training",
    "literature": "queries unseen in training, database = the training images "
    "(what the papers report)",
}
DASH = "–"
TARGET_BITS = 32
_STD_NOTE = "mean ± std over seeds (std = numpy population std, ddof=0)"
_DISTINCT_NOTE = (
    "distinct share = distinct database codes / database films (a collapsed model has few)"
)
#: Columns that describe the codes rather than rank the methods: never bold.
_UNRANKED = (DISTINCT_CODES, DISTINCT_SHARE)
_NO_CELLS = "no bench cells to report on: the list of cell results is empty"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th.label, td.label { text-align: left; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
img { max-width: 100%; }
"""


# ---------------------------------------------------------------- aggregation


def aggregate(cells: Sequence[Mapping[str, Any]], protocol: str = "strict") -> dict[str, Any]:
    """Mean, population std (ddof=0) and count over seeds of every number in the cells.

    Cells are grouped by (group, method, variant, bits); a repeated seed in one
    group keeps the last cell given. Missing or non-finite values are left out
    of a statistic and show in its ``n``. The result holds only JSON types, so
    ``json.loads(json.dumps(result)) == result``.

    Args:
        cells: bench cell dicts (see ``cxrhash.bench.runner``).
        protocol: which entry of each cell's ``metrics`` / ``references`` /
            ``pr_curve`` / ``per_finding_ap`` to aggregate.

    Returns:
        ``{"protocol", "datasets", "seeds", "bits", "n_cells", "label_names",
        "rows", "references"}``; each row is ``{"group", "kind", "method",
        "variant", "bits", "n_seeds", "seeds", "metrics", "efficiency",
        "per_finding_ap", "pr_curve"}`` with ``{"mean", "std", "n"}`` per number
        and the PR curve averaged point-wise (or ``None``); ``references`` is a
        list of ``{"name", "bits", "n_cells", "metrics"}`` averaged over the
        main-group deep cells (methods and seeds) of each bit length.

    Raises:
        ValueError: ``cells`` is empty.
    """
    if not cells:
        raise ValueError(_NO_CELLS)
    groups: dict[tuple[str, str, str, int], dict[Any, Mapping[str, Any]]] = {}
    for cell in cells:
        key, seed = _group_key(cell), cell.get("seed")
        by_seed = groups.setdefault(key, {})
        if seed in by_seed:
            LOG.warning("duplicate bench cell %s seed %s: keeping the last", key, seed)
        by_seed[seed] = cell
    rows = [
        _aggregate_group(list(groups[key].values()), key, protocol)
        for key in sorted(groups, key=_row_sort_key)
    ]
    refs: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for key in groups:
        if key[0] != "main":
            continue
        for cell in groups[key].values():
            for name, metrics in ((cell.get("references") or {}).get(protocol) or {}).items():
                refs.setdefault((name, key[3]), []).append(metrics or {})
    ref_order = {name: i for i, name in enumerate(REFERENCE_ROWS)}
    references = [
        {"name": name, "bits": bits, "n_cells": len(ms), "metrics": _stats(ms)}
        for (name, bits), ms in sorted(
            refs.items(), key=lambda kv: (kv[0][1], ref_order.get(kv[0][0], 99), kv[0][0])
        )
    ]
    label_names = next((list(c["label_names"]) for c in cells if c.get("label_names")), [])
    return {
        "protocol": protocol,
        "datasets": sorted({str(c.get("dataset", "")) for c in cells} - {""}),
        "seeds": sorted({s for g in groups.values() for s in g if s is not None}),
        "bits": sorted({key[3] for key in groups}),
        "n_cells": sum(len(g) for g in groups.values()),
        "label_names": label_names,
        "rows": rows,
        "references": references,
    }


def _group_key(cell: Mapping[str, Any]) -> tuple[str, str, str, int]:
    """(group, method, variant, bits) of a cell; missing group means ``main``."""
    return (
        str(cell.get("group") or "main"),
        str(cell["method"]),
        str(cell.get("variant") or ""),
        int(cell["bits"]),
    )


def method_sort_key(method: str, kind: str = "") -> tuple[int, int, str]:
    """Papers' methods, deep baselines, shallow ones (fixed order), external, then unknown."""
    if method in METHOD_ORDER:
        return (0, METHOD_ORDER.index(method), "")
    if method.startswith("ext:") or kind == "external":
        return (1, 0, method)
    return (2, 0, method)


def _variant_sort_key(variant: str) -> tuple[int, str]:
    known = ("", *AF_VARIANTS, *OSDH_VARIANTS, *PRETRAIN_VARIANTS)
    return (known.index(variant), "") if variant in known else (len(known), variant)


def _row_sort_key(key: tuple[str, str, str, int]) -> tuple[Any, ...]:
    group, method, variant, bits = key
    return (method_sort_key(method), _variant_sort_key(variant), group != "main", group, bits)


def _aggregate_group(
    cells: list[Mapping[str, Any]], key: tuple[str, str, str, int], protocol: str
) -> dict[str, Any]:
    group, method, variant, bits = key
    return {
        "group": group,
        "kind": str(next((c["kind"] for c in cells if c.get("kind")), "")),
        "method": method,
        "variant": variant,
        "bits": bits,
        "n_seeds": len(cells),
        "seeds": sorted(c["seed"] for c in cells if c.get("seed") is not None),
        "metrics": _stats((c.get("metrics") or {}).get(protocol) or {} for c in cells),
        "efficiency": _stats(c.get("efficiency") or {} for c in cells),
        "per_finding_ap": _stats(
            (c.get("per_finding_ap") or {}).get(protocol) or {} for c in cells
        ),
        "pr_curve": _mean_curve([(c.get("pr_curve") or {}).get(protocol) for c in cells]),
    }


def _number(v: Any) -> float | None:
    """``v`` as a finite float, or ``None`` (missing, non-numeric, NaN, inf)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _stats(dicts: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | int]]:
    """``{key: {"mean", "std" (ddof=0), "n"}}`` over the dicts, keys in order of first sight."""
    values: dict[str, list[float]] = {}
    for d in dicts:
        for k, v in d.items():
            x = _number(v)
            lst = values.setdefault(k, [])
            if x is not None:
                lst.append(x)
    return {
        k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
        for k, v in values.items()
        if v
    }


def _mean_curve(curves: list[Any]) -> dict[str, list[float]] | None:
    """Point-wise mean of PR curves (index = Hamming radius); ragged ones cut to the shortest."""
    ok = [c for c in curves if c and c.get("precision") and c.get("recall")]
    if not ok:
        return None
    out = {}
    for part in ("precision", "recall"):
        arrs = [np.asarray(c[part], dtype=np.float64) for c in ok]
        n = min(len(a) for a in arrs)
        mean = np.nanmean(np.stack([a[:n] for a in arrs]), axis=0)
        out[part] = [float(x) if math.isfinite(x) else 0.0 for x in mean]
    return out


def closest_bits(bits: Iterable[int], target: int = TARGET_BITS) -> int:
    """The code length nearest ``target`` (the shorter one on a tie)."""
    return min(bits, key=lambda b: (abs(b - target), b))


def _known_first(items: Iterable[str], known: Sequence[str]) -> list[str]:
    """Distinct ``items``: those in ``known`` in its order, then the rest as first seen."""
    present = dict.fromkeys(items)
    return [k for k in known if k in present] + [k for k in present if k not in known]


# ---------------------------------------------------------------- document blocks


@dataclass
class Cell:
    """A table cell with optional emphasis."""

    text: str
    bold: bool = False
    italic: bool = False


@dataclass
class Table:
    """A captioned table; the first ``label_columns`` columns are row labels (left-aligned)."""

    caption: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    label_columns: int = 1


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Text:
    """Plain text (no markup)."""

    text: str


@dataclass
class Code:
    text: str


@dataclass
class Facts:
    """A list of ``key: value`` lines."""

    items: list[tuple[str, str]]


@dataclass
class Image:
    """A PNG in the report folder."""

    file: str
    alt: str


@dataclass
class Notes:
    """Free Markdown written by the caller."""

    markdown: str


Block = Heading | Text | Code | Facts | Table | Image | Notes


# ---------------------------------------------------------------- tables


def _label(row: Mapping[str, Any]) -> str:
    """Row label of a main-table row: the method, plus its variant when not the default."""
    variant = row["variant"]
    return row["method"] if variant in _DEFAULT_VARIANTS else f"{row['method']} ({variant})"


def _fmt(stat: Mapping[str, Any] | None, n_total: int) -> str:
    """``mean ± std`` at 3 decimals, ``(n=k)`` when fewer than all seeds contributed."""
    if not stat:
        return DASH
    text = f"{stat['mean']:.3f} ± {stat['std']:.3f}"
    return text + (f" (n={stat['n']})" if stat["n"] < n_total else "")


def _bold_best(
    rows: list[list[Cell]],
    stats: list[list[Mapping[str, Any] | None]],
    ranked: Sequence[bool] | None = None,
) -> None:
    """Bold, per column, every cell whose mean ties the column's best at 3 decimals
    (only the columns ``ranked`` marks, all by default)."""
    for col in range(len(stats[0]) if stats else 0):
        if ranked is not None and not ranked[col]:
            continue
        column = [s[col] for s in stats]
        best = max((st["mean"] for st in column if st), default=None)
        if best is None:
            continue
        for row, st in zip(rows, column, strict=True):
            if st and f"{st['mean']:.3f}" == f"{best:.3f}":
                row[col + 1].bold = True


def _main_rows(agg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of the main group (not ablations), in report order."""
    return [r for r in agg["rows"] if r["group"] == "main"]


def _main_bits(agg: Mapping[str, Any]) -> list[int]:
    """Bit lengths of the main group, ascending."""
    return sorted({r["bits"] for r in _main_rows(agg)})


def _main_by_label(agg: Mapping[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """Main-group rows with metrics as ``{label: {bits: row}}`` in method order."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for row in _main_rows(agg):
        if row["metrics"]:
            out.setdefault(_label(row), {})[row["bits"]] = row
    return out


def _bits_of(by_label: Mapping[str, Mapping[int, Any]]) -> list[int]:
    """Every bit length of a ``{label: {bits: ...}}`` mapping, ascending."""
    return sorted({b for per in by_label.values() for b in per})


def _refs_by_name(agg: Mapping[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for ref in agg["references"]:
        out.setdefault(ref["name"], {})[ref["bits"]] = ref["metrics"]
    return out


def _ranked_table(
    caption: str,
    header: list[str],
    methods: Mapping[str, list[Mapping[str, Any] | None]],
    references: Mapping[str, list[Mapping[str, Any] | None]],
    n_total: int,
    has_references: bool,
    ranked: Sequence[bool] | None = None,
) -> Table:
    """Method rows with each column's best in bold, then the reference rows in italics.

    ``caption`` is extended to explain the bold (and, with ``has_references``, the italics).
    ``ranked`` marks the columns that get a bold best (default: all).
    """
    stats = list(methods.values())
    rows = [[Cell(label)] + [Cell(_fmt(s, n_total)) for s in st] for label, st in methods.items()]
    _bold_best(rows, stats, ranked)
    rows += [
        [Cell(f"{name} (reference)", italic=True)] + [Cell(_fmt(s, 0), italic=True) for s in st]
        for name, st in references.items()
    ]
    caption += "; best method per column in bold" + (
        "; italic rows are references, not methods." if has_references else "."
    )
    return Table(caption, header, rows)


def _metric_by_bits_tables(agg: Mapping[str, Any], number: str, n_total: int) -> list[Table]:
    """One table per headline metric: rows methods (then references), columns bit lengths;
    the mAP table also gives the distinct-code share at each bit length."""
    methods = _main_by_label(agg)
    bits = _bits_of(methods)
    refs = _refs_by_name(agg)
    tables = []
    for i, metric in enumerate(HEADLINE):
        keys = with_distinct_share([metric]) if metric == "mAP" else [metric]
        columns = [(b, key) for b in bits for key in keys]
        stats = {
            label: [per[b]["metrics"].get(key) if b in per else None for b, key in columns]
            for label, per in methods.items()
        }
        if not any(s for row in stats.values() for s in row):
            continue
        caption = (
            f"Table {number}{chr(ord('a') + i)}. {metric}, {agg['protocol']} protocol: {_STD_NOTE}"
        )
        if len(keys) > 1:
            caption += f"; {_DISTINCT_NOTE}"
        ref_stats = {
            name: [per.get(b, {}).get(key) for b, key in columns] for name, per in refs.items()
        }
        header = [
            "method",
            *[f"{b} bits" if key == metric else f"{b} bits {_title(key)}" for b, key in columns],
        ]
        ranked = [key not in _UNRANKED for _, key in columns]
        tables.append(_ranked_table(caption, header, stats, ref_stats, n_total, bool(refs), ranked))
    return tables


def _title(key: str) -> str:
    """The column title of a metric key (``distinct share`` for ``distinct_share``)."""
    return COLUMN_TITLES.get(key, key)


def _full_tables(agg: Mapping[str, Any], n_total: int) -> list[Table]:
    """One table per bit length with every metric: rows methods (then references)."""
    methods = _main_by_label(agg)
    refs = _refs_by_name(agg)
    tables = []
    for bits in _bits_of(methods):
        here = {label: per[bits] for label, per in methods.items() if bits in per}
        metrics = _known_first(
            (m for row in here.values() for m in row["metrics"]), with_distinct_share(HEADLINE)
        )
        stats = {label: [row["metrics"].get(m) for m in metrics] for label, row in here.items()}
        ref_stats = {
            name: [per[bits].get(m) for m in metrics] for name, per in refs.items() if bits in per
        }
        caption = f"All metrics at {bits} bits, {agg['protocol']} protocol: {_STD_NOTE}"
        header = ["method", *[_title(m) for m in metrics]]
        ranked = [m not in _UNRANKED for m in metrics]
        tables.append(_ranked_table(caption, header, stats, ref_stats, n_total, bool(refs), ranked))
    return tables


def _efficiency_table(agg: Mapping[str, Any], bits: int) -> Table:
    """Table 2: cost per method at one bit length, mean over seeds; ``–`` = not measured."""
    rows = []
    for row in _main_rows(agg):
        if row["bits"] != bits:
            continue
        cells = [Cell(_label(row))]
        for key, (_, fmt) in EFFICIENCY.items():
            stat = row["efficiency"].get(key)
            cells.append(Cell(format(stat["mean"], fmt) if stat else DASH))
        rows.append(cells)
    caption = f"Table 2. Efficiency at {bits} bits, mean over seeds; {DASH} = not measured."
    return Table(caption, ["method", *[title for title, _ in EFFICIENCY.values()]], rows)


def _delta_table(
    caption: str,
    label_header: list[str],
    entries: Sequence[tuple[list[str], Mapping[str, Any], Mapping[str, Any] | None]],
    n_total: int,
) -> Table:
    """Headline metrics (and the distinct-code share) of ablation rows and Δ mAP against
    each entry's reference row."""
    columns = with_distinct_share(HEADLINE)
    rows = []
    for labels, row, ref in entries:
        if ref is None or "mAP" not in ref["metrics"] or "mAP" not in row["metrics"]:
            delta = DASH
        elif row is ref:
            delta = "ref"
        else:
            delta = f"{row['metrics']['mAP']['mean'] - ref['metrics']['mAP']['mean']:+.3f}"
        rows.append(
            [Cell(t) for t in labels]
            + [Cell(_fmt(row["metrics"].get(m), n_total)) for m in columns]
            + [Cell(delta)]
        )
    header = [*label_header, *[_title(m) for m in columns], "Δ mAP"]
    return Table(caption, header, rows, len(label_header))


def standing(
    cells: Sequence[Mapping[str, Any]],
    protocol: str = "strict",
    primary: str = PRIMARY,
    metric: str = "mAP",
) -> dict[str, dict[int, dict[str, float | int]]]:
    """Per-seed paired differences ``primary − other`` of ``metric`` in the main group.

    Every method of a seed shares that seed's split, so the difference is taken
    seed by seed (and against the reference rows of ``primary``'s own cells).

    Returns:
        ``{other: {bits: {"mean", "std", "n", "ahead"}}}``: mean and population std
        of the differences over the seeds both have, and on how many of them
        ``primary`` is ahead.
    """
    score: dict[tuple[str, int], dict[Any, float]] = {}
    for cell in cells:
        if str(cell.get("group") or "main") != "main":
            continue
        bits, seed = int(cell["bits"]), cell.get("seed")
        value = _number(((cell.get("metrics") or {}).get(protocol) or {}).get(metric))
        if value is not None:
            score.setdefault((str(cell["method"]), bits), {})[seed] = value
        if cell["method"] == primary:
            for name, ref in ((cell.get("references") or {}).get(protocol) or {}).items():
                ref_value = _number((ref or {}).get(metric))
                if ref_value is not None:
                    score.setdefault((f"{name} (reference)", bits), {})[seed] = ref_value
    out: dict[str, dict[int, dict[str, float | int]]] = {}
    for (other, bits), by_seed in score.items():
        mine = score.get((primary, bits), {})
        seeds = sorted(set(mine) & set(by_seed), key=str)
        if other == primary or not seeds:
            continue
        diffs = np.array([mine[s] - by_seed[s] for s in seeds])
        out.setdefault(other, {})[bits] = {
            "mean": float(diffs.mean()),
            "std": float(diffs.std()),
            "n": len(seeds),
            "ahead": int((diffs > 0).sum()),
        }
    order = {label: i for i, label in enumerate(REFERENCE_ROWS)}
    return dict(
        sorted(
            out.items(),
            key=lambda kv: (
                kv[0].endswith("(reference)"),
                method_sort_key(kv[0]),
                order.get(kv[0], 0),
            ),
        )
    )


def _standing_table(cells: Sequence[Mapping[str, Any]], protocol: str) -> Table | None:
    """Table 3: how far the primary method is ahead of (+) or behind (−) each other one."""
    table = standing(cells, protocol)
    if not table:
        return None
    bits = sorted({b for per in table.values() for b in per})
    rows = []
    for other, per in table.items():
        cells_ = [Cell(other, italic=other.endswith("(reference)"))]
        for b in bits:
            d = per.get(b)
            cells_.append(
                Cell(
                    DASH
                    if d is None
                    else f"{d['mean']:+.3f} ± {d['std']:.3f} ({d['ahead']}/{d['n']})"
                )
            )
        rows.append(cells_)
    caption = (
        f"Table 3. {PRIMARY} − each other method, {protocol} mAP: mean ± std over seeds of the "
        f"per-seed difference (same split per seed); (a/n) = ahead on a of n seeds."
    )
    return Table(caption, ["vs", *[f"{b} bits" for b in bits]], rows)


def _ablation_tables(agg: Mapping[str, Any], n_total: int) -> list[Table]:
    """Attention-fusion variants, OSDH loss variants, pretraining, then any other ablation runs."""
    ablation = [r for r in agg["rows"] if r["group"] == "ablation"]
    main = {
        (r["method"], r["bits"]): r for r in _main_rows(agg) if r["variant"] in _DEFAULT_VARIANTS
    }
    protocol = agg["protocol"]
    tables = []
    for bits in sorted({r["bits"] for r in ablation}):
        here = [r for r in ablation if r["bits"] == bits]
        note = f"{bits} bits, {protocol} protocol: {_STD_NOTE}; Δ mAP = difference of the means"

        af = [
            r
            for r in here
            if r["method"] == "attention-fusion" and r["variant"] not in PRETRAIN_VARIANTS
        ]
        if af:
            full = main.get(("attention-fusion", bits))
            ref = full or next((r for r in af if r["variant"] == "full"), None)
            entries = [(["full (main run)"], full, ref)] if full else []
            entries += [([r["variant"] or "(none)"], r, ref) for r in af]
            tables.append(
                _delta_table(
                    f"Attention-fusion ablation, {note} vs the full model.",
                    ["variant"],
                    entries,
                    n_total,
                )
            )

        osdh = [r for r in here if r["method"] == "osdh" and r["variant"] not in PRETRAIN_VARIANTS]
        if osdh:
            full = main.get(("osdh", bits))
            entries = [(["ranking + classification (main run)"], full, full)] if full else []
            entries += [([r["variant"] or "(none)"], r, full) for r in osdh]
            tables.append(
                _delta_table(
                    f"OSDH loss ablation, {note} vs ranking + classification.",
                    ["loss"],
                    entries,
                    n_total,
                )
            )

        pre = [r for r in here if r["variant"] in PRETRAIN_VARIANTS]
        if pre:
            entries = []
            for method in dict.fromkeys(r["method"] for r in pre):
                full = main.get((method, bits))
                if full:
                    entries.append(([method, "main run"], full, full))
                entries += [([method, r["variant"]], r, full) for r in pre if r["method"] == method]
            tables.append(
                _delta_table(
                    f"Pretraining comparison, {note} vs the main run of the same method.",
                    ["method", "initialisation"],
                    entries,
                    n_total,
                )
            )

        known = {id(r) for r in (*af, *osdh, *pre)}
        other = [r for r in here if id(r) not in known]
        if other:
            entries = [
                ([r["method"], r["variant"] or "(none)"], r, main.get((r["method"], bits)))
                for r in other
            ]
            tables.append(
                _delta_table(
                    f"Other ablation runs, {note} vs the main run of the same method.",
                    ["method", "variant"],
                    entries,
                    n_total,
                )
            )
    return tables


# ---------------------------------------------------------------- figures


def _figures(
    cells: Sequence[Mapping[str, Any]], agg: Mapping[str, Any], bits: int, out_dir: Path
) -> list[Image]:
    """Draw and save every figure that has data; return the ones written, in report order.

    PR curves at every main bit length, mAP and nDCG@100 against bits, then the
    training loss and AP per finding at ``bits``.
    """
    protocol = agg["protocol"]
    main = _main_rows(agg)
    styles = method_styles({_label(r): r["kind"] for r in main})
    drawn: list[tuple[Image, Figure]] = []
    for b in _main_bits(agg):
        curves = {_label(r): r["pr_curve"] for r in main if r["bits"] == b and r["pr_curve"]}
        if curves:
            image = Image(f"pr_curves_{b}.png", f"PR curves at {b} bits")
            drawn.append((image, pr_curves_figure(curves, b, protocol, styles)))
    methods = _main_by_label(agg)
    series = {label: {b: r["metrics"] for b, r in per.items()} for label, per in methods.items()}
    metrics = [
        m
        for m in ("mAP", "nDCG@100")
        if any(m in ms for per in series.values() for ms in per.values())
    ]
    if metrics:
        image = Image("map_vs_bits.png", "mAP and nDCG@100 vs bits")
        drawn.append((image, metric_vs_bits_figure(series, metrics, protocol, styles)))
    runs = _loss_runs(cells, bits)
    runs = {label: runs[label] for label in styles if label in runs}
    if runs:
        image = Image("loss_curves.png", f"training loss at {bits} bits")
        drawn.append((image, loss_curves_figure(runs, bits, styles)))
    aps = {
        _label(r): r["per_finding_ap"] for r in main if r["bits"] == bits and r["per_finding_ap"]
    }
    if aps:
        findings = _known_first((f for ap in aps.values() for f in ap), agg["label_names"])
        image = Image("per_finding_ap.png", f"AP per finding at {bits} bits")
        drawn.append((image, per_finding_ap_figure(aps, findings, bits, protocol, styles)))
    for image, fig in drawn:
        save_png(fig, out_dir / image.file)
    return [image for image, _ in drawn]


def _loss_runs(cells: Sequence[Mapping[str, Any]], bits: int) -> dict[str, LossRun]:
    """``{label: (seed, history)}`` of the lowest-seed main run at ``bits`` with a finite loss."""
    runs: dict[str, LossRun] = {}
    for cell in sorted(cells, key=lambda c: (c.get("seed") is None, c.get("seed") or 0)):
        group, method, variant, cell_bits = _group_key(cell)
        if group != "main" or cell_bits != bits:
            continue
        history = [h for h in cell.get("history") or [] if _number(h.get("loss_total")) is not None]
        label = _label({"method": method, "variant": variant})
        if history and label not in runs:
            runs[label] = (cell.get("seed"), history)
    return runs


# ---------------------------------------------------------------- rendering


def _md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    if cell.bold:
        text = f"**{text}**"
    if cell.italic:
        text = f"*{text}*"
    return text


def _render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Code):
            out.append("```\n" + b.text + "\n```")
        elif isinstance(b, Facts):
            out.append("\n".join(f"- **{k}**: {v}" for k, v in b.items))
        elif isinstance(b, Table):
            lines = [
                b.caption,
                "",
                "| " + " | ".join(h.replace("|", "\\|") for h in b.header) + " |",
                "|" + ":---|" * b.label_columns + "---:|" * (len(b.header) - b.label_columns),
            ]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.file})")
        else:
            out.append(b.markdown.strip())
    return "\n\n".join(out) + "\n"


def _html_cell(cell: Cell, label: bool) -> str:
    text = html.escape(cell.text)
    if cell.bold:
        text = f"<b>{text}</b>"
    if cell.italic:
        text = f"<i>{text}</i>"
    return f'<td class="label">{text}</td>' if label else f"<td>{text}</td>"


def _notes_html(text: str) -> str:
    """Notes through the ``markdown`` package when installed, else as preformatted text."""
    try:
        import markdown
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    return str(markdown.markdown(text, extensions=["tables"]))


def _render_html(blocks: list[Block], title: str, out_dir: Path) -> str:
    """One self-contained page: images as base64 data URIs, no external references."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            out.append(f"<p>{esc(b.text)}</p>")
        elif isinstance(b, Code):
            out.append(f"<pre><code>{esc(b.text)}</code></pre>")
        elif isinstance(b, Facts):
            items = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in b.items)
            out.append(f"<ul>{items}</ul>")
        elif isinstance(b, Table):
            n = b.label_columns
            head = "".join(
                f'<th class="label">{esc(h)}</th>' if i < n else f"<th>{esc(h)}</th>"
                for i, h in enumerate(b.header)
            )
            body = "".join(
                "<tr>" + "".join(_html_cell(c, i < n) for i, c in enumerate(row)) + "</tr>"
                for row in b.rows
            )
            out.append(
                f"<table><caption>{esc(b.caption)}</caption><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>"
            )
        elif isinstance(b, Image):
            data = base64.b64encode((out_dir / b.file).read_bytes()).decode("ascii")
            out.append(f'<p><img src="data:image/png;base64,{data}" alt="{esc(b.alt)}"></p>')
        else:
            out.append(_notes_html(b.markdown))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the report


def _protocols(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """Protocols with metrics in any cell, ``literature`` / ``strict`` first."""
    return _known_first(
        (p for c in cells for p in (c.get("metrics") or {})), ("literature", "strict")
    )


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
        raise ValueError(_NO_CELLS)
    protocols = _protocols(cells)
    if protocol not in protocols:
        raise ValueError(
            f"no cell has metrics for protocol {protocol!r}; found: {protocols or 'none'}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    aggs = {p: aggregate(cells, p) for p in protocols}
    agg = aggs[protocol]
    n_total = len(agg["seeds"])
    eff_bits = closest_bits(_main_bits(agg) or agg["bits"])
    n_ablation = sum(r["n_seeds"] for r in agg["rows"] if r["group"] == "ablation")

    blocks: list[Block] = [
        Heading(1, title),
        Text("Command:"),
        Code(command),
        Facts(
            [
                ("dataset(s)", ", ".join(agg["datasets"]) or DASH),
                (
                    "cells",
                    f"{agg['n_cells']} ({agg['n_cells'] - n_ablation} main, {n_ablation} ablation)",
                ),
                ("seeds", ", ".join(str(s) for s in agg["seeds"]) or DASH),
                ("bits", ", ".join(str(b) for b in agg["bits"])),
                (
                    "protocol",
                    f"{protocol}: {PROTOCOL_TEXT.get(protocol, 'as defined by the bench')}",
                ),
                (
                    "statistics",
                    f"{_STD_NOTE}; (n=k) marks a figure from only k of the {n_total} seeds",
                ),
            ]
        ),
        Heading(2, f"Table 1: retrieval quality ({protocol})"),
        *_metric_by_bits_tables(agg, "1", n_total),
        Heading(3, f"All metrics per code length ({protocol})"),
        *_full_tables(agg, n_total),
    ]
    for i, other in enumerate(p for p in protocols if p != protocol):
        blocks += [
            Heading(3, f"Headline metrics, {other} protocol"),
            Text(f"{other}: {PROTOCOL_TEXT.get(other, 'as defined by the bench')}."),
            *_metric_by_bits_tables(aggs[other], f"1.{i + 1}", n_total),
        ]
    standing_table = _standing_table(cells, protocol)
    if standing_table is not None:
        blocks += [Heading(2, f"Table 3: where {PRIMARY} stands ({protocol})"), standing_table]
    blocks += [Heading(2, "Table 2: efficiency"), _efficiency_table(agg, eff_bits)]
    ablations = _ablation_tables(agg, n_total)
    if ablations:
        blocks += [Heading(2, "Ablations"), *ablations]
    figures = _figures(cells, agg, eff_bits, out_dir)
    if figures:
        blocks += [Heading(2, "Figures"), *figures]
    if notes.strip():
        blocks += [Heading(2, "Notes"), Notes(notes)]

    (out_dir / "report.md").write_text(_render_markdown(blocks), encoding="utf-8")
    standings = {p: standing(cells, p) for p in protocols}
    (out_dir / "results.json").write_text(
        json.dumps(
            {"title": title, "command": command, "protocols": aggs, "standing": standings},
            indent=2,
        ),
        encoding="utf-8",
    )
    html_path = out_dir / "report.html"
    html_path.write_text(_render_html(blocks, title, out_dir), encoding="utf-8")
    LOG.info("bench report written to %s", out_dir)
    return html_path
