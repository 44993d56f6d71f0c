"""The bench report's tables, built from :func:`cxrhash.bench.aggregate.aggregate`.

Table 1 (headline metrics against code length) and the full table per code
length rank the methods: each column's best in bold, the reference rows (float
upper bound, LSH, random codes, ...) in italics below them. Table 2 gives the
cost, Table 3 the per-seed paired differences of the primary method, and the
ablation tables Δ mAP against each variant's main run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cxrhash.bench.aggregate import (
    DEFAULT_VARIANTS,
    PRETRAIN_VARIANTS,
    PRIMARY,
    known_first,
    main_by_label,
    main_rows,
    references_by_name,
    row_label,
    standing,
)
from cxrhash.bench.document import Cell, Table
from cxrhash.evaluation.evaluate import (
    COLUMN_TITLES,
    DISTINCT_CODES,
    DISTINCT_SHARE,
    HEADLINE,
    with_distinct_share,
)

# efficiency key → (column title, number format)
EFFICIENCY = {
    "feature_ms_per_image": ("feature ms/image", ".2f"),
    "retrieval_ms_per_query": ("retrieval ms/query", ".3f"),
    "train_seconds": ("training time (s)", ".1f"),
    "peak_memory_mb": ("peak memory (MiB)", ".0f"),
}
DASH = "–"
STD_NOTE = "mean ± std over seeds (std = numpy population std, ddof=0)"
_DISTINCT_NOTE = (
    "distinct share = distinct database codes / database films (a collapsed model has few)"
)
#: Columns that describe the codes rather than rank the methods: never bold.
_UNRANKED = (DISTINCT_CODES, DISTINCT_SHARE)

Stat = Mapping[str, Any]  # {"mean", "std", "n"} over seeds
# An ablation table entry: (row labels, the row, the row its Δ mAP is taken against).
Entry = tuple[list[str], Mapping[str, Any], Mapping[str, Any] | None]
Rows = list[dict[str, Any]]
MainAt = Mapping[str, Mapping[str, Any]]  # method → its main run at the table's bit length


def _fmt(stat: Stat | None, n_total: int) -> str:
    """``mean ± std`` at 3 decimals, ``(n=k)`` when fewer than all seeds contributed."""
    if not stat:
        return DASH
    text = f"{stat['mean']:.3f} ± {stat['std']:.3f}"
    return text + (f" (n={stat['n']})" if stat["n"] < n_total else "")


def _title(key: str) -> str:
    """The column title of a metric key (``distinct share`` for ``distinct_share``)."""
    return COLUMN_TITLES.get(key, key)


def _bits_of(by_label: Mapping[str, Mapping[int, Any]]) -> list[int]:
    """Every bit length of a ``{label: {bits: ...}}`` mapping, ascending."""
    return sorted({b for per in by_label.values() for b in per})


def _bold_best(
    rows: list[list[Cell]],
    stats: list[list[Stat | None]],
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


def _ranked_table(
    caption: str,
    header: list[str],
    methods: Mapping[str, list[Stat | None]],
    references: Mapping[str, list[Stat | None]],
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


def metric_by_bits_tables(agg: Mapping[str, Any], number: str, n_total: int) -> list[Table]:
    """Table ``number``: one table per headline metric, rows methods (then references),
    columns bit lengths; the mAP table also gives the distinct-code share at each bit length."""
    methods = main_by_label(agg)
    bits = _bits_of(methods)
    refs = references_by_name(agg)
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
            f"Table {number}{chr(ord('a') + i)}. {metric}, {agg['protocol']} protocol: {STD_NOTE}"
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


def full_tables(agg: Mapping[str, Any], n_total: int) -> list[Table]:
    """One table per bit length with every metric: rows methods (then references)."""
    methods = main_by_label(agg)
    refs = references_by_name(agg)
    tables = []
    for bits in _bits_of(methods):
        here = {label: per[bits] for label, per in methods.items() if bits in per}
        metrics = known_first(
            (m for row in here.values() for m in row["metrics"]), with_distinct_share(HEADLINE)
        )
        stats = {label: [row["metrics"].get(m) for m in metrics] for label, row in here.items()}
        ref_stats = {
            name: [per[bits].get(m) for m in metrics] for name, per in refs.items() if bits in per
        }
        caption = f"All metrics at {bits} bits, {agg['protocol']} protocol: {STD_NOTE}"
        header = ["method", *[_title(m) for m in metrics]]
        ranked = [m not in _UNRANKED for m in metrics]
        tables.append(_ranked_table(caption, header, stats, ref_stats, n_total, bool(refs), ranked))
    return tables


def efficiency_table(agg: Mapping[str, Any], bits: int) -> Table:
    """Table 2: cost per method at one bit length, mean over seeds; ``–`` = not measured."""
    rows = []
    for row in main_rows(agg):
        if row["bits"] != bits:
            continue
        cells = [Cell(row_label(row))]
        for key, (_, fmt) in EFFICIENCY.items():
            stat = row["efficiency"].get(key)
            cells.append(Cell(format(stat["mean"], fmt) if stat else DASH))
        rows.append(cells)
    caption = f"Table 2. Efficiency at {bits} bits, mean over seeds; {DASH} = not measured."
    return Table(caption, ["method", *[title for title, _ in EFFICIENCY.values()]], rows)


def standing_table(cells: Sequence[Mapping[str, Any]], protocol: str) -> Table | None:
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


# ---------------------------------------------------------------- ablations


def _delta_table(
    caption: str, label_header: list[str], entries: Sequence[Entry], n_total: int
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


def ablation_tables(agg: Mapping[str, Any], n_total: int) -> list[Table]:
    """Attention-fusion variants, OSDH loss variants, pretraining, then any other ablation
    runs, per bit length; each kind only when it has rows."""
    ablation = [r for r in agg["rows"] if r["group"] == "ablation"]
    main = [r for r in main_rows(agg) if r["variant"] in DEFAULT_VARIANTS]
    tables = []
    for bits in sorted({r["bits"] for r in ablation}):
        here = [r for r in ablation if r["bits"] == bits]
        main_at = {r["method"]: r for r in main if r["bits"] == bits}
        note = (
            f"{bits} bits, {agg['protocol']} protocol: {STD_NOTE}; Δ mAP = difference of the means"
        )
        for rows, (title, versus, labels, entries) in zip(
            _ablation_kinds(here), _ABLATION_KINDS, strict=True
        ):
            if rows:
                caption = f"{title}, {note} {versus}"
                tables.append(_delta_table(caption, labels, entries(rows, main_at), n_total))
    return tables


def _ablation_kinds(rows: Rows) -> tuple[Rows, Rows, Rows, Rows]:
    """The ablation rows of one bit length split into attention-fusion variants, OSDH loss
    variants, pretraining runs and the rest."""
    af = [
        r
        for r in rows
        if r["method"] == "attention-fusion" and r["variant"] not in PRETRAIN_VARIANTS
    ]
    osdh = [r for r in rows if r["method"] == "osdh" and r["variant"] not in PRETRAIN_VARIANTS]
    pre = [r for r in rows if r["variant"] in PRETRAIN_VARIANTS]
    known = {id(r) for r in (*af, *osdh, *pre)}
    return af, osdh, pre, [r for r in rows if id(r) not in known]


def _attention_fusion_entries(rows: Rows, main_at: MainAt) -> list[Entry]:
    """Variants against the full model: its main run, else the ``full`` ablation row."""
    full = main_at.get("attention-fusion")
    ref = full or next((r for r in rows if r["variant"] == "full"), None)
    entries: list[Entry] = [(["full (main run)"], full, ref)] if full else []
    return entries + [([r["variant"] or "(none)"], r, ref) for r in rows]


def _osdh_entries(rows: Rows, main_at: MainAt) -> list[Entry]:
    """Loss variants against OSDH's main run (ranking + classification)."""
    full = main_at.get("osdh")
    entries: list[Entry] = [(["ranking + classification (main run)"], full, full)] if full else []
    return entries + [([r["variant"] or "(none)"], r, full) for r in rows]


def _pretraining_entries(rows: Rows, main_at: MainAt) -> list[Entry]:
    """C2L-initialised and from-scratch runs after the main run of the same method."""
    entries: list[Entry] = []
    for method in dict.fromkeys(r["method"] for r in rows):
        full = main_at.get(method)
        if full:
            entries.append(([method, "main run"], full, full))
        entries += [([method, r["variant"]], r, full) for r in rows if r["method"] == method]
    return entries


def _other_entries(rows: Rows, main_at: MainAt) -> list[Entry]:
    """Any other ablation run against the main run of the same method."""
    return [([r["method"], r["variant"] or "(none)"], r, main_at.get(r["method"])) for r in rows]


# (caption title, what Δ mAP is against, label columns, entries) per kind of ablation
_ABLATION_KINDS: tuple[tuple[str, str, list[str], Callable[[Rows, MainAt], list[Entry]]], ...] = (
    ("Attention-fusion ablation", "vs the full model.", ["variant"], _attention_fusion_entries),
    ("OSDH loss ablation", "vs ranking + classification.", ["loss"], _osdh_entries),
    (
        "Pretraining comparison",
        "vs the main run of the same method.",
        ["method", "initialisation"],
        _pretraining_entries,
    ),
    (
        "Other ablation runs",
        "vs the main run of the same method.",
        ["method", "variant"],
        _other_entries,
    ),
)
