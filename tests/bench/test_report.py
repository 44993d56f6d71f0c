"""Bench report: every printed number against numpy on the synthetic cells it was built from."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import cxrhash.bench.report_figures as report_figures
from cxrhash.bench.aggregate import aggregate, closest_bits, method_sort_key
from cxrhash.bench.report import write_report
from cxrhash.evaluation.evaluate import HEADLINE, ROW_FLOAT, ROW_RANDOM

FINDINGS = ["Atelectasis", "Effusion", "No Finding"]
METRICS = [*HEADLINE, "P@100", "R@100", "P@H<=2"]
BITS = (16, 32)
SEEDS = (0, 1, 2)
KIND = {"attention-fusion": "deep", "dsh": "deep", "itq": "shallow", "ext:toolkit": "external"}
BASE = {"attention-fusion": 0.6, "dsh": 0.5, "itq": 0.3, "ext:toolkit": 0.4}
FIGURES = ["pr_curves_16.png", "pr_curves_32.png", "map_vs_bits.png", "loss_curves.png"]
FIGURES.append("per_finding_ap.png")


def _metrics(rng: np.random.Generator, base: float, method: str) -> dict[str, float]:
    # itq wins P@10 so "best in bold" is not simply "first row in bold"
    metrics = {
        m: base + (0.5 if (method, m) == ("itq", "P@10") else 0.0) + float(rng.uniform(0, 0.05))
        for m in METRICS
    }
    distinct = int(rng.integers(5, 100))  # of 100 database films; dsh collapses hardest
    return {**metrics, "distinct_codes": distinct, "distinct_share": distinct / 100}


def _cell(
    rng: np.random.Generator,
    method: str,
    bits: int,
    seed: int,
    group: str = "main",
    variant: str = "",
    shift: float = 0.0,
) -> dict[str, Any]:
    kind = KIND[method]
    base = BASE[method] + shift + 0.001 * bits
    cell: dict[str, Any] = {
        "kind": kind,
        "method": method,
        "group": group,
        "variant": variant,
        "bits": bits,
        "seed": seed,
        "dataset": "phantom:/tmp/x",
        "label_names": FINDINGS,
        "metrics": {"strict": _metrics(rng, base, method)},
        "pr_curve": {
            "strict": {
                "precision": sorted(rng.uniform(0.3, 1.0, bits + 1).tolist(), reverse=True),
                "recall": sorted(rng.uniform(0.0, 1.0, bits + 1).tolist()),
            }
        },
        "per_finding_ap": {"strict": {f: float(rng.uniform(0.1, 0.9)) for f in FINDINGS}},
    }
    if kind == "external":
        cell["efficiency"] = {"retrieval_ms_per_query": float(rng.uniform(0.01, 0.02))}
        return cell
    cell["metrics"]["literature"] = _metrics(rng, base + 0.1, method)
    cell["efficiency"] = {
        "feature_ms_per_image": float(rng.uniform(1, 5)),
        "retrieval_ms_per_query": float(rng.uniform(0.01, 0.1)),
        "train_seconds": float(rng.uniform(10, 100)),
        "peak_memory_mb": float(rng.uniform(500, 900)),
    }
    if kind == "deep":
        cell["references"] = {
            "strict": {
                ROW_FLOAT: {m: 0.9 + float(rng.uniform(0, 0.05)) for m in METRICS},
                ROW_RANDOM: {
                    **{m: 0.1 + float(rng.uniform(0, 0.05)) for m in METRICS},
                    "distinct_share": 1.0,
                },
            }
        }
        cell["history"] = [
            {"epoch": e, "loss_total": 2.0 / e + float(rng.uniform(0, 0.1))} for e in range(1, 5)
        ]
    return cell


def _main_cells() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    cells = [
        _cell(rng, m, b, s)
        for m in ("ext:toolkit", "itq", "dsh", "attention-fusion")  # not in report order
        for b in BITS
        for s in SEEDS
        if m != "ext:toolkit" or (b, s) == (32, 0)  # one external run: 32 bits, one seed
    ]
    rng.shuffle(cells)  # type: ignore[arg-type]
    return cells


def _ablation_cells() -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    return [
        _cell(rng, "attention-fusion", 32, s, "ablation", v, shift)
        for v, shift in (("global-only", -0.1), ("no-fmax", -0.05), ("c2l", 0.02))
        for s in SEEDS
    ]


@pytest.fixture(scope="module")
def cells() -> list[dict[str, Any]]:
    return _main_cells()


@pytest.fixture(scope="module")
def report(cells: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    html = write_report(cells, out, title="Synthetic bench", command="cxrhash bench --x 1")
    assert html == out / "report.html"
    return out


@pytest.fixture(scope="module")
def ablation_report(cells: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("ablation")
    write_report(cells + _ablation_cells(), out, title="With ablations", command="cxrhash bench")
    return (out / "report.md").read_text()


def _values(cells: list[dict[str, Any]], method: str, bits: int, metric: str, **kw: str) -> list:
    protocol = kw.get("protocol", "strict")
    return [
        c["metrics"][protocol][metric]
        for c in cells
        if c["method"] == method
        and c["bits"] == bits
        and c["group"] == kw.get("group", "main")
        and c["variant"] == kw.get("variant", "")
        and protocol in c["metrics"]
    ]


def _expected(values: list[float], n_total: int = len(SEEDS)) -> str:
    text = f"{np.mean(values):.3f} ± {np.std(values):.3f}"
    return text + (f" (n={len(values)})" if len(values) < n_total else "")


def _table(md: str, caption: str) -> tuple[str, list[str], list[list[str]]]:
    """(caption line, header, raw rows) of the first Markdown table whose caption matches."""
    lines = md.splitlines()
    i = next(i for i, line in enumerate(lines) if re.match(caption, line))
    split = [cell.strip() for cell in lines[i + 2].strip("|").split(" | ")]
    rows = []
    for line in lines[i + 4 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return lines[i], split, rows


def _plain(cell: str) -> str:
    return cell.replace("**", "").strip("*")


def test_table1_mean_std_equal_numpy(report: Path, cells: list[dict[str, Any]]) -> None:
    md = (report / "report.md").read_text()
    for metric in HEADLINE:
        caption, header, rows = _table(md, rf"Table 1[a-z]\. {re.escape(metric)}, strict")
        assert "ddof=0" in caption
        if metric == "mAP":  # the distinct-code share beside mAP, per code length
            assert header == [
                "method",
                "16 bits",
                "16 bits distinct share",
                "32 bits",
                "32 bits distinct share",
            ]
        else:
            assert header == ["method", "16 bits", "32 bits"]
        by_label = {_plain(r[0]): r for r in rows}
        for method in KIND:
            for bits in BITS:
                vals = _values(cells, method, bits, metric)
                want = _expected(vals) if vals else "–"
                col = header.index(f"{bits} bits")
                assert _plain(by_label[method][col]) == want, (metric, method, bits)


def test_table1_gives_the_distinct_share_beside_map(
    report: Path, cells: list[dict[str, Any]]
) -> None:
    md = (report / "report.md").read_text()
    caption, header, rows = _table(md, r"Table 1a\. mAP, strict")
    assert "distinct share = distinct database codes / database films" in caption
    by_label = {_plain(r[0]): r for r in rows}
    for method in KIND:
        for bits in BITS:
            vals = _values(cells, method, bits, "distinct_share")
            col = header.index(f"{bits} bits distinct share")
            assert _plain(by_label[method][col]) == (_expected(vals) if vals else "–")
            assert not by_label[method][col].startswith("**")  # a share is not a score
    assert by_label[f"{ROW_RANDOM} (reference)"][2] == "*1.000 ± 0.000*"
    assert by_label[f"{ROW_FLOAT} (reference)"][2] == "*–*"  # no codes
    saved = json.loads((report / "results.json").read_text())["protocols"]["strict"]
    dsh = next(r for r in saved["rows"] if (r["method"], r["bits"]) == ("dsh", 16))
    vals = _values(cells, "dsh", 16, "distinct_share")
    assert dsh["metrics"]["distinct_share"] == {"mean": np.mean(vals), "std": np.std(vals), "n": 3}


def test_single_seed_shows_zero_std_and_n(report: Path, cells: list[dict[str, Any]]) -> None:
    md = (report / "report.md").read_text()
    _, header, rows = _table(md, r"Table 1a\. mAP, strict")
    ext = next(r for r in rows if _plain(r[0]) == "ext:toolkit")
    (value,) = _values(cells, "ext:toolkit", 32, "mAP")
    assert _plain(ext[header.index("32 bits")]) == f"{value:.3f} ± 0.000 (n=1)"
    assert ext[header.index("16 bits")] == "–"  # no 16-bit run


def test_bold_marks_the_best_method_per_column(report: Path, cells: list[dict[str, Any]]) -> None:
    md = (report / "report.md").read_text()
    for metric in HEADLINE:
        _, header, rows = _table(md, rf"Table 1[a-z]\. {re.escape(metric)}, strict")
        for bits in BITS:
            col = header.index(f"{bits} bits")
            means = {m: np.mean(v) for m in KIND if (v := _values(cells, m, bits, metric))}
            best = max(means, key=means.__getitem__)
            bold = [_plain(r[0]) for r in rows if r[col].startswith("**")]
            assert bold == [best], (metric, bits)
    assert max(KIND, key=lambda m: np.mean(_values(cells, m, 32, "P@10"))) == "itq"


def test_reference_rows_average_deep_cells_over_methods_and_seeds(
    report: Path, cells: list[dict[str, Any]]
) -> None:
    md = (report / "report.md").read_text()
    _, _, rows = _table(md, r"Table 1c\. nDCG@100, strict")
    labels = [_plain(r[0]) for r in rows]
    assert labels[-2:] == [f"{ROW_FLOAT} (reference)", f"{ROW_RANDOM} (reference)"]
    for name, row in zip((ROW_FLOAT, ROW_RANDOM), rows[-2:], strict=True):
        assert row[0].startswith("*") and not row[0].startswith("**")  # italic, not bold
        for col, bits in enumerate(BITS, start=1):
            vals = [
                c["references"]["strict"][name]["nDCG@100"]
                for c in cells
                if c["bits"] == bits and c["kind"] == "deep"
            ]
            assert len(vals) == 2 * len(SEEDS)
            assert row[col] == f"*{np.mean(vals):.3f} ± {np.std(vals):.3f}*"


def test_full_table_has_every_metric(report: Path, cells: list[dict[str, Any]]) -> None:
    md = (report / "report.md").read_text()
    _, header, rows = _table(md, r"All metrics at 16 bits, strict")
    assert header == ["method", "mAP", "distinct share", *METRICS[1:], "distinct_codes"]
    assert not any(r[2].startswith("**") for r in rows)  # shares are never bold
    dsh = next(r for r in rows if _plain(r[0]) == "dsh")
    col = header.index("P@H<=2")
    assert _plain(dsh[col]) == _expected(_values(cells, "dsh", 16, "P@H<=2"))
    assert all(_plain(r[0]) != "ext:toolkit" for r in rows)  # it has no 16-bit run


def test_methods_in_paper_baseline_shallow_external_order(report: Path) -> None:
    md = (report / "report.md").read_text()
    _, _, rows = _table(md, r"Table 1a\. mAP, strict")
    assert [_plain(r[0]) for r in rows[:4]] == ["attention-fusion", "dsh", "itq", "ext:toolkit"]
    names = ["zeta", "ext:b", "sh", "dh", "osdh", "ext:a", "alpha", "attention-fusion", "lsh"]
    assert sorted(names, key=method_sort_key) == [
        "attention-fusion",
        "osdh",
        "dh",
        "lsh",
        "sh",
        "ext:a",
        "ext:b",
        "alpha",
        "zeta",
    ]


def test_literature_gets_headline_tables_only(report: Path, cells: list[dict[str, Any]]) -> None:
    md = (report / "report.md").read_text()
    _, _, rows = _table(md, r"Table 1\.1[a-z]\. mAP@100, literature")
    itq = next(r for r in rows if _plain(r[0]) == "itq")
    assert _plain(itq[2]) == _expected(_values(cells, "itq", 32, "mAP@100", protocol="literature"))
    assert all(_plain(r[0]) != "ext:toolkit" for r in rows)  # no literature metrics
    assert "All metrics at 32 bits, literature" not in md


def test_efficiency_table_means_and_dashes(report: Path, cells: list[dict[str, Any]]) -> None:
    md = (report / "report.md").read_text()
    caption, header, rows = _table(md, r"Table 2\.")
    assert "32 bits" in caption
    by_label = {r[0]: r for r in rows}
    feat = [
        c["efficiency"]["feature_ms_per_image"]
        for c in cells
        if c["method"] == "itq" and c["bits"] == 32
    ]
    assert by_label["itq"][1] == f"{np.mean(feat):.2f}"
    assert by_label["ext:toolkit"][1] == by_label["ext:toolkit"][3] == "–"
    assert by_label["ext:toolkit"][4] == "–"
    assert by_label["ext:toolkit"][2] != "–"
    assert closest_bits([16, 64]) == 16 and closest_bits([8, 48, 128]) == 48


def test_ablation_tables_only_with_ablation_cells(
    report: Path, ablation_report: str, cells: list[dict[str, Any]]
) -> None:
    assert "Ablation" not in (report / "report.md").read_text()
    md = ablation_report
    all_cells = cells + _ablation_cells()
    full = np.mean(_values(all_cells, "attention-fusion", 32, "mAP"))
    _, header, rows = _table(md, r"Attention-fusion ablation, 32 bits")
    assert header[-1] == "Δ mAP" and header[1:3] == ["mAP", "distinct share"]
    by_variant = {r[0]: r for r in rows}
    assert set(by_variant) == {"full (main run)", "global-only", "no-fmax"}
    assert by_variant["full (main run)"][-1] == "ref"
    for variant in ("global-only", "no-fmax"):
        abl = _values(all_cells, "attention-fusion", 32, "mAP", group="ablation", variant=variant)
        assert by_variant[variant][-1] == f"{np.mean(abl) - full:+.3f}"
        assert by_variant[variant][1] == _expected(abl)
        share = _values(
            all_cells, "attention-fusion", 32, "distinct_share", group="ablation", variant=variant
        )
        assert by_variant[variant][2] == _expected(share)
    _, _, rows = _table(md, r"Pretraining comparison, 32 bits")
    c2l = _values(all_cells, "attention-fusion", 32, "mAP", group="ablation", variant="c2l")
    assert [r[:2] for r in rows] == [["attention-fusion", "main run"], ["attention-fusion", "c2l"]]
    assert rows[1][-1] == f"{np.mean(c2l) - full:+.3f}"
    assert "OSDH loss ablation" not in md


def test_figures_are_valid_pngs_linked_from_markdown(report: Path) -> None:
    md = (report / "report.md").read_text()
    for name in FIGURES:
        with Image.open(report / name) as img:
            assert img.format == "PNG"
            img.verify()
        assert f"]({name})" in md


def test_figures_get_main_rows_in_table_order(
    cells: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each figure is handed: main rows only, in table order; loss of the lowest seed."""
    calls: dict[str, list[tuple[Any, ...]]] = {}

    def recorder(name: str) -> Any:
        def draw(*args: Any) -> str:
            calls.setdefault(name, []).append(args)
            return name

        return draw

    for name in ("pr_curves", "metric_vs_bits", "loss_curves", "per_finding_ap"):
        monkeypatch.setattr(report_figures, f"{name}_figure", recorder(name))
    monkeypatch.setattr(report_figures, "save_png", lambda fig, path: path.write_bytes(b"png"))
    # an ablation run labelled like a main one, with the lowest seed: must not be picked
    decoy = _cell(np.random.default_rng(2), "dsh", 32, -1, group="ablation")
    all_cells = [*cells, *_ablation_cells(), decoy]
    write_report(all_cells, tmp_path, title="t", command="c")
    order = ["attention-fusion", "dsh", "itq", "ext:toolkit"]

    def at(method: str, bits: int, seed: int | None = None) -> list[dict[str, Any]]:
        return [
            c
            for c in all_cells
            if (c["method"], c["bits"], c["group"]) == (method, bits, "main")
            and seed in (None, c["seed"])
        ]

    assert [args[1] for args in calls["pr_curves"]] == list(BITS)
    curves, _, protocol, styles = calls["pr_curves"][1]
    assert list(curves) == order and protocol == "strict"
    dsh = np.mean([c["pr_curve"]["strict"]["precision"] for c in at("dsh", 32)], axis=0)
    np.testing.assert_allclose(curves["dsh"]["precision"], dsh)
    assert list(styles) == order and styles["itq"]["linestyle"] == "--"

    ((series, metrics, _, _),) = calls["metric_vs_bits"]
    assert list(series) == order and metrics == ["mAP", "nDCG@100"]
    assert series["itq"][16]["mAP"]["mean"] == pytest.approx(
        np.mean(_values(cells, "itq", 16, "mAP"))
    )

    ((runs, bits, _),) = calls["loss_curves"]
    assert bits == 32 and list(runs) == ["attention-fusion", "dsh"]  # deep main runs only
    for label, (seed, history) in runs.items():
        assert seed == 0 and history == at(label, 32, 0)[0]["history"]

    ((aps, findings, bits, _, _),) = calls["per_finding_ap"]
    assert bits == 32 and list(aps) == order and findings == FINDINGS
    ap = [c["per_finding_ap"]["strict"]["Effusion"] for c in at("dsh", 32)]
    assert aps["dsh"]["Effusion"]["mean"] == pytest.approx(np.mean(ap))
    md = (tmp_path / "report.md").read_text()
    assert re.findall(r"\]\(([^)]+\.png)\)", md) == FIGURES


def test_html_is_self_contained(report: Path) -> None:
    page = (report / "report.html").read_text()
    assert 'src="http' not in page and "href=" not in page and "<link" not in page
    payloads = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert sorted(base64.b64decode(p) for p in payloads) == sorted(
        (report / name).read_bytes() for name in FIGURES
    )
    with Image.open(io.BytesIO(base64.b64decode(payloads[0]))) as img:
        assert img.format == "PNG"
    md = (report / "report.md").read_text()
    assert page.count("<table>") == md.count("\n|:---|")
    assert "cxrhash bench --x 1" in page


def test_results_json_round_trips(report: Path, cells: list[dict[str, Any]]) -> None:
    saved = json.loads((report / "results.json").read_text())
    assert saved["command"] == "cxrhash bench --x 1"
    for protocol in ("strict", "literature"):
        assert saved["protocols"][protocol] == aggregate(cells, protocol)
    row = next(
        r for r in saved["protocols"]["strict"]["rows"] if (r["method"], r["bits"]) == ("dsh", 32)
    )
    vals = _values(cells, "dsh", 32, "mAP_w")
    assert row["n_seeds"] == 3 and row["seeds"] == [0, 1, 2]
    assert row["metrics"]["mAP_w"] == {"mean": np.mean(vals), "std": np.std(vals), "n": 3}
    mem = [
        c["efficiency"]["peak_memory_mb"] for c in cells if (c["method"], c["bits"]) == ("dsh", 32)
    ]
    assert row["efficiency"]["peak_memory_mb"]["mean"] == pytest.approx(np.mean(mem))


def test_empty_input_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        aggregate([], "strict")
    with pytest.raises(ValueError, match="empty"):
        write_report([], tmp_path / "r", title="t", command="c")


def test_standing_table_is_the_per_seed_difference(
    report: Path, cells: list[dict[str, Any]]
) -> None:
    _, header, rows = _table((report / "report.md").read_text(), r"Table 3\.")
    assert header == ["vs", "16 bits", "32 bits"]
    labels = [_plain(r[0]) for r in rows]
    assert labels == [
        "dsh",
        "itq",
        "ext:toolkit",
        f"{ROW_FLOAT} (reference)",
        f"{ROW_RANDOM} (reference)",
    ]
    by_label = dict(zip(labels, (r[1:] for r in rows), strict=True))

    def per_seed(method: str, bits: int) -> dict[int, float]:
        return {
            c["seed"]: c["metrics"]["strict"]["mAP"]
            for c in cells
            if c["method"] == method and c["bits"] == bits
        }

    for other in ("dsh", "itq"):
        for j, bits in enumerate(BITS):
            mine, theirs = per_seed("attention-fusion", bits), per_seed(other, bits)
            d = np.array([mine[s] - theirs[s] for s in SEEDS])
            assert by_label[other][j] == f"{d.mean():+.3f} ± {d.std():.3f} ({(d > 0).sum()}/3)"
    # the single external run: 32 bits, seed 0 only; behind attention-fusion (0.4 vs 0.6)
    assert by_label["ext:toolkit"][0] == "–" and by_label["ext:toolkit"][1].endswith("(1/1)")
    # random codes from attention-fusion's own cells: far behind it on every seed
    assert all(v.endswith("(3/3)") for v in by_label[f"{ROW_RANDOM} (reference)"])
    assert all(v.startswith("-") for v in by_label[f"{ROW_FLOAT} (reference)"])
    saved = json.loads((report / "results.json").read_text())["standing"]["strict"]
    assert saved["dsh"]["32"]["n"] == 3
