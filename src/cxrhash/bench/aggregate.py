"""Statistics of bench cells over seeds: per-row summaries and per-seed paired differences.

``cxrhash bench`` writes one JSON dict per finished (method, variant, bits, seed)
cell. :func:`aggregate` turns a list of them into rows of mean, population std
and count over seeds; :func:`standing` takes the per-seed differences between
the primary method and every other one. Every table and figure of the report is
built from these two, so ``report.md``, ``report.html`` and ``results.json``
always agree. The helpers at the end read the aggregate the way the report does
(main rows, their labels, the reference rows by name).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from cxrhash.bench.grid import AF_ABLATIONS, DEEP_BASELINES, OSDH_ABLATIONS, PAPER_METHODS
from cxrhash.bench.grid import SHALLOW as SHALLOW_METHODS
from cxrhash.evaluation.evaluate import (
    ROW_ASYMMETRIC,
    ROW_FLOAT,
    ROW_LSH,
    ROW_RANDOM,
    ROW_STORED_FLOATS,
)

LOG = logging.getLogger(__name__)

METHOD_ORDER = PAPER_METHODS + DEEP_BASELINES + SHALLOW_METHODS
PRIMARY = PAPER_METHODS[0]  # attention-fusion, the method the standing table is about
REFERENCE_ROWS = (ROW_FLOAT, ROW_STORED_FLOATS, ROW_ASYMMETRIC, ROW_LSH, ROW_RANDOM)
AF_VARIANTS = ("full", *AF_ABLATIONS)
OSDH_VARIANTS = tuple(OSDH_ABLATIONS)
PRETRAIN_VARIANTS = ("c2l", "scratch")
DEFAULT_VARIANTS = ("", "full")  # a main-table row without a variant suffix
TARGET_BITS = 32
NO_CELLS = "no bench cells to report on: the list of cell results is empty"

GroupKey = tuple[str, str, str, int]  # (group, method, variant, bits)


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
        raise ValueError(NO_CELLS)
    groups = _cells_by_group(cells)
    rows = [
        _aggregate_group(list(groups[key].values()), key, protocol)
        for key in sorted(groups, key=_row_sort_key)
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
        "references": _aggregate_references(groups, protocol),
    }


def _cells_by_group(
    cells: Sequence[Mapping[str, Any]],
) -> dict[GroupKey, dict[Any, Mapping[str, Any]]]:
    """``{group key: {seed: cell}}``; a repeated seed keeps the last cell (with a warning)."""
    groups: dict[GroupKey, dict[Any, Mapping[str, Any]]] = {}
    for cell in cells:
        key, seed = group_key(cell), cell.get("seed")
        by_seed = groups.setdefault(key, {})
        if seed in by_seed:
            LOG.warning("duplicate bench cell %s seed %s: keeping the last", key, seed)
        by_seed[seed] = cell
    return groups


def _aggregate_references(
    groups: Mapping[GroupKey, Mapping[Any, Mapping[str, Any]]], protocol: str
) -> list[dict[str, Any]]:
    """Reference rows (float upper bound, LSH, ...) averaged over the main cells per bit length."""
    refs: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for key in groups:
        if key[0] != "main":
            continue
        for cell in groups[key].values():
            for name, metrics in ((cell.get("references") or {}).get(protocol) or {}).items():
                refs.setdefault((name, key[3]), []).append(metrics or {})
    ref_order = {name: i for i, name in enumerate(REFERENCE_ROWS)}
    return [
        {"name": name, "bits": bits, "n_cells": len(ms), "metrics": _stats(ms)}
        for (name, bits), ms in sorted(
            refs.items(), key=lambda kv: (kv[0][1], ref_order.get(kv[0][0], 99), kv[0][0])
        )
    ]


def group_key(cell: Mapping[str, Any]) -> GroupKey:
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


def _row_sort_key(key: GroupKey) -> tuple[Any, ...]:
    group, method, variant, bits = key
    return (method_sort_key(method), _variant_sort_key(variant), group != "main", group, bits)


def _aggregate_group(
    cells: list[Mapping[str, Any]], key: GroupKey, protocol: str
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


def finite_number(v: Any) -> float | None:
    """``v`` as a finite float, or ``None`` (missing, non-numeric, NaN, inf)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _stats(dicts: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | int]]:
    """``{key: {"mean", "std" (ddof=0), "n"}}`` over the dicts, keys in order of first sight."""
    values: dict[str, list[float]] = {}
    for d in dicts:
        for k, v in d.items():
            x = finite_number(v)
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


# ---------------------------------------------------------------- paired differences


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
    score = _main_scores_by_seed(cells, protocol, primary, metric)
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


def _main_scores_by_seed(
    cells: Sequence[Mapping[str, Any]], protocol: str, primary: str, metric: str
) -> dict[tuple[str, int], dict[Any, float]]:
    """``{(method or "<reference> (reference)", bits): {seed: metric}}`` of the main cells;
    the reference rows are those of ``primary``'s own cells."""
    score: dict[tuple[str, int], dict[Any, float]] = {}
    for cell in cells:
        if str(cell.get("group") or "main") != "main":
            continue
        bits, seed = int(cell["bits"]), cell.get("seed")
        value = finite_number(((cell.get("metrics") or {}).get(protocol) or {}).get(metric))
        if value is not None:
            score.setdefault((str(cell["method"]), bits), {})[seed] = value
        if cell["method"] == primary:
            for name, ref in ((cell.get("references") or {}).get(protocol) or {}).items():
                ref_value = finite_number((ref or {}).get(metric))
                if ref_value is not None:
                    score.setdefault((f"{name} (reference)", bits), {})[seed] = ref_value
    return score


# ---------------------------------------------------------------- reading an aggregate


def protocols(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """Protocols with metrics in any cell, ``literature`` / ``strict`` first."""
    return known_first(
        (p for c in cells for p in (c.get("metrics") or {})), ("literature", "strict")
    )


def closest_bits(bits: Iterable[int], target: int = TARGET_BITS) -> int:
    """The code length nearest ``target`` (the shorter one on a tie)."""
    return min(bits, key=lambda b: (abs(b - target), b))


def known_first(items: Iterable[str], known: Sequence[str]) -> list[str]:
    """Distinct ``items``: those in ``known`` in its order, then the rest as first seen."""
    present = dict.fromkeys(items)
    return [k for k in known if k in present] + [k for k in present if k not in known]


def row_label(row: Mapping[str, Any]) -> str:
    """Row label of a main-table row: the method, plus its variant when not the default."""
    variant = row["variant"]
    return row["method"] if variant in DEFAULT_VARIANTS else f"{row['method']} ({variant})"


def main_rows(agg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of the main group (not ablations), in report order."""
    return [r for r in agg["rows"] if r["group"] == "main"]


def main_bits(agg: Mapping[str, Any]) -> list[int]:
    """Bit lengths of the main group, ascending."""
    return sorted({r["bits"] for r in main_rows(agg)})


def main_by_label(agg: Mapping[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """Main-group rows with metrics as ``{label: {bits: row}}`` in method order."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for row in main_rows(agg):
        if row["metrics"]:
            out.setdefault(row_label(row), {})[row["bits"]] = row
    return out


def references_by_name(agg: Mapping[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """Reference rows' metrics as ``{name: {bits: metrics}}``."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for ref in agg["references"]:
        out.setdefault(ref["name"], {})[ref["bits"]] = ref["metrics"]
    return out
