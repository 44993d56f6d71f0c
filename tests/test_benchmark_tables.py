"""Tables of benchmarks/results.py (docs/results.md) and recipes.py (docs/recipes.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    """The two scripts as modules (recipes.py imports results.py by its bare name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("results", "recipes"):
        sys.modules.pop(name, None)
    import recipes
    import results

    return results, recipes


def _row(m_ap: float, share: float | None) -> dict[str, float]:
    row = {k: m_ap for k in ("mAP", "mAP@100", "nDCG@100", "ACG@100", "mAP_w", "P@10")}
    return row if share is None else {**row, "distinct_share": share, "distinct_codes": 1.0}


def _facts(m_ap: float, share: float | None, two_stage: bool = True) -> dict:
    rows = {
        "hash codes": _row(m_ap, share),
        "float upper bound (cosine)": _row(0.9, None),
        "LSH on features": _row(0.3, 0.5 if share is not None else None),
        "random codes": _row(0.2, 1.0 if share is not None else None),
    }
    if two_stage:
        rows["two-stage (asymmetric re-rank)"] = _row(m_ap + 0.01, share)
        rows["two-stage (stored floats)"] = _row(m_ap + 0.02, None)
    protocols = {p: {"rows": rows, "n_query": 3, "n_database": 9} for p in ("strict", "literature")}
    train = {"train_seconds": 60.0, "rollbacks": []}
    return {"eval": {"protocols": protocols}, "train": train}


def _cells(table: str, label: str) -> dict[str, str]:
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if label in cells[:2]:
            return dict(zip(header, cells, strict=True))
    raise AssertionError(f"no row {label!r} in\n{table}")


def test_results_table_shows_the_distinct_share_beside_map(
    scripts: tuple[ModuleType, ModuleType],
) -> None:
    results, _ = scripts
    runs = {(64, 0): _facts(0.5, 11 / 299), (64, 1): _facts(0.6, 0.5)}
    table = results.table(runs, "strict", [64])
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header[2:4] == ["mAP", "distinct share"]
    hash_row = _cells(table, "hash codes")
    shares = [11 / 299, 0.5]
    assert hash_row["distinct share"] == f"{np.mean(shares):.4f} ± {np.std(shares):.4f}"
    assert hash_row["mAP"] == f"{0.55:.4f} ± {0.05:.4f}"
    assert _cells(table, "float upper bound (cosine)")["distinct share"] == "–"
    assert _cells(table, "two-stage (asymmetric re-rank)")["mAP"] == "0.5600 ± 0.0500"
    assert _cells(table, "two-stage (stored floats)")["distinct share"] == "–"


def test_results_table_of_an_older_eval_json_renders_dashes(
    scripts: tuple[ModuleType, ModuleType],
) -> None:
    results, _ = scripts
    old = {(32, 0): _facts(0.4, None, two_stage=False)}
    table = results.table(old, "literature", [32])
    assert _cells(table, "hash codes")["distinct share"] == "–"
    assert _cells(table, "hash codes")["mAP"] == "0.4000"
    assert "two-stage" not in table  # rows no run has are left out
    mixed = {(32, 0): _facts(0.4, None, two_stage=False), (32, 1): _facts(0.5, 0.2)}
    table = results.table(mixed, "strict", [32])
    assert _cells(table, "hash codes")["distinct share"] == "–"  # one seed lacks it
    assert _cells(table, "two-stage (asymmetric re-rank)")["mAP"] == "–"


def test_results_paired_table_pairs_scratch_and_c2l_by_seed(
    scripts: tuple[ModuleType, ModuleType],
) -> None:
    results, _ = scripts
    scratch = {(32, 0): _facts(0.30, 0.1), (32, 1): _facts(0.40, 0.1), (32, 2): _facts(0.50, 0.1)}
    c2l = {(32, 0): _facts(0.35, 0.1), (32, 1): _facts(0.38, 0.1)}  # seed 2 not run yet
    table = results.paired_table(scratch, c2l, [32])
    row = _cells(table, "hash codes")
    assert row["from scratch"] == "0.3500 ± 0.0500"  # seeds 0-1 only: the pairs
    assert row["from C2L"] == "0.3650 ± 0.0150"
    # per-seed differences +0.05 and -0.02: mean +0.015, std 0.035, ahead on 1 of 2
    assert row["C2L − scratch (paired by seed)"] == "+0.0150 ± 0.0350 (1/2)"
    assert _cells(table, "float upper bound (cosine)")["C2L − scratch (paired by seed)"] == (
        "+0.0000 ± 0.0000 (0/2)"
    )


def test_recipes_section_shows_the_distinct_share(scripts: tuple[ModuleType, ModuleType]) -> None:
    _, recipes = scripts
    runs = {
        "paper": {0: _facts(0.5, 0.04), 1: _facts(0.6, 0.06)},
        "old": {0: _facts(0.55, None), 1: _facts(0.65, 0.1)},
    }
    text = recipes.section("t", "python benchmarks/recipes.py", runs)
    table = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    paper, old = _cells(table, "paper"), _cells(table, "old")
    assert paper["distinct share"] == f"{0.05:.4f} ± {0.01:.4f}"
    assert old["distinct share"] == "–"
    assert old["− first variant (paired)"] == f"{0.05:.4f} ± {0.0:.4f}"
    # codes against their own float upper bound (0.9) and LSH of the same features (0.3)
    ratios = [0.5 / 0.9, 0.6 / 0.9]
    assert paper["codes / float"] == f"{np.mean(ratios):.4f} ± {np.std(ratios):.4f}"
    assert paper["codes − LSH of the features (paired)"] == f"{0.25:.4f} ± {0.05:.4f}"


def test_search_page_keeps_the_rerank_section_when_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("search", "rerank"):
        sys.modules.pop(name, None)
    import rerank
    import search

    page = tmp_path / "search.md"
    page.write_text("# Search\n\n## Targets\n\n- t\n\n## Every configuration\n\n| a |\n")
    rerank.write_section(page, rerank.TITLE, f"## {rerank.TITLE}\n\nfirst\n")
    rerank.write_section(page, rerank.TITLE, f"## {rerank.TITLE}\n\nsecond\n")  # replaced
    text = page.read_text()
    assert text.count(rerank.TITLE) == 1 and "second" in text and "first" not in text
    assert text.startswith("# Search\n\n## Targets")
    assert search.other_sections(page) == f"\n## {rerank.TITLE}\n\nsecond\n"


def test_codes_summary_pairs_seeds_and_counts_seeds_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("codes_summary", None)
    import codes_summary

    def cell(method: str, seed: int, codes: float, lsh: float, share: float) -> None:
        refs = {name: {"mAP": codes + 0.02} for name in (codes_summary.FLOAT, codes_summary.STORED)}
        refs[codes_summary.LSH] = {"mAP": lsh}
        refs[codes_summary.ASYM] = {"mAP": codes}
        body = {
            "method": method, "bits": 64, "seed": seed, "group": "main", "variant": "",
            "metrics": {"strict": {"mAP": codes, "distinct_share": share}},
            "references": {"strict": refs},
        }  # fmt: skip
        (tmp_path / "cells" / f"deep-{method}-64b-s{seed}.json").write_text(json.dumps(body))

    (tmp_path / "cells").mkdir()
    cell("attention-fusion", 0, 0.70, 0.69, 0.1)
    cell("attention-fusion", 1, 0.60, 0.64, 0.3)
    cell("hashnet", 0, 0.65, 0.60, 0.2)
    cell("hashnet", 1, 0.62, 0.60, 0.2)
    text = codes_summary.summary(codes_summary.load_cells(tmp_path))
    af = next(line for line in text.splitlines() if line.startswith("| 64 | attention-fusion"))
    # LSH: +0.01 and −0.04 → mean −0.015, std 0.025, ahead on 1 of 2 seeds
    assert "-0.015 ± 0.025 (1/2 ahead)" in af and "0.200 ± 0.100" in af and "0.700, 0.600" in af
    # attention-fusion − hashnet: +0.05 and −0.02
    expected = "attention-fusion − hashnet at 64 bits, paired by seed: +0.015 ± 0.035 (1/2 ahead)"
    assert expected in text


def test_bench_progress_round_trips_finished_cells_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("bench_all", None)
    import bench_all

    monkeypatch.setattr(bench_all, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(bench_all, "PROGRESS", tmp_path / "progress")
    run = tmp_path / "runs" / "phantom-cpu128"
    for rel, text in {
        "bench.json": "{}",
        "splits/seed0.json": "split 0",
        "cells/deep-a-64b-s0.json": "cell a",
        "cells/deep-b-64b-s0.json": "cell b",
        "cells/deep-c-64b-s0.error.txt": "failed",  # not a finished cell
        "runs/deep-a-64b-s0/best.pt": "weights",  # never carried
    }.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(text)
    assert bench_all.save_progress("phantom-cpu128") == 2
    saved = tmp_path / "progress" / "phantom-cpu128"
    assert sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()) == [
        "bench.json", "cells/deep-a-64b-s0.json", "cells/deep-b-64b-s0.json", "splits/seed0.json",
    ]  # fmt: skip

    (run / "cells" / "deep-a-64b-s0.json").unlink()
    (run / "splits" / "seed0.json").write_text("newer split")
    assert bench_all.restore_progress("phantom-cpu128") == 1
    assert (run / "cells" / "deep-a-64b-s0.json").read_text() == "cell a"
    assert (run / "splits" / "seed0.json").read_text() == "newer split"  # never overwritten
    assert bench_all.restore_progress("phantom-cpu128") == 0
