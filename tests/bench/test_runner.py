"""`cxrhash bench` end to end on phantom films: cells, resume, budget, external codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxrhash.bench.cells import EXTERNAL_FILES, score_external
from cxrhash.bench.grid import GridSpec
from cxrhash.bench.runner import BenchError, BenchSpec, run_bench
from cxrhash.bench.scoring import score_codes
from cxrhash.data.labels import add_no_finding, label_names, relevance_labels, with_no_finding_np
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import load_split
from cxrhash.encode import encode_dataset
from cxrhash.evaluation.evaluate import (
    ROW_ASYMMETRIC,
    ROW_FLOAT,
    ROW_LSH,
    ROW_RANDOM,
    ROW_STORED_FLOATS,
    code_metrics,
)
from cxrhash.index.codes import AmbiguousCodesError, pack_codes
from cxrhash.training.checkpoint import load_model


def _spec(phantom_dir: Path, **grid: object) -> BenchSpec:
    g = GridSpec(methods=("dsh",), shallow=("itq", "lsh"), bits=(16,), seeds=(0,), ablations=False)
    for k, v in grid.items():
        setattr(g, k, v)
    return BenchSpec(data=f"phantom:{phantom_dir}", profile="test", grid=g, overrides={"epochs": 1})


@pytest.mark.slow
def test_bench_runs_resumes_and_reports(phantom_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    summary = run_bench(_spec(phantom_dir), out, progress=False)
    assert summary["failed"] == [] and summary["pending"] == []
    cells = sorted(p.name for p in (out / "cells").glob("*.json"))
    assert cells == ["deep-dsh-16b-s0.json", "shallow-itq-16b-s0.json", "shallow-lsh-16b-s0.json"]
    deep = json.loads((out / "cells" / "deep-dsh-16b-s0.json").read_text())
    assert set(deep["metrics"]) == {"strict", "literature"}
    assert len(deep["pr_curve"]["strict"]["precision"]) == 17
    assert deep["efficiency"]["train_seconds"] > 0 and deep["history"]
    # beside the codes: the float upper bound, LSH of the cell's own features, the
    # two-stage re-ranks and random codes, each with its own metrics
    refs = deep["references"]["strict"]
    assert set(refs) == {ROW_FLOAT, ROW_LSH, ROW_ASYMMETRIC, ROW_STORED_FLOATS, ROW_RANDOM}
    assert refs[ROW_LSH]["mAP"] != refs[ROW_RANDOM]["mAP"]
    report = (out / "report" / "report.md").read_text()
    assert f"{ROW_LSH} (reference)" in report
    # every method saw the same cached split
    run_split = json.loads((out / "runs" / "deep-dsh-16b-s0" / "split.json").read_text())
    assert run_split == json.loads((out / "splits" / "seed0.json").read_text())
    assert (out / "report" / "report.md").exists() and Path(summary["report"]).exists()
    # the cell's own codes, scored as external codes, give the cell's numbers
    ext = _export_cell_codes(out / "runs" / "deep-dsh-16b-s0", tmp_path / "ext-dsh")
    res = score_external("dsh", ext, no_finding_class=True)
    assert res["metrics"]["strict"] == pytest.approx(deep["metrics"]["strict"])

    # a second run re-uses every finished cell; a lost result is re-scored without retraining
    stamp = (out / "cells" / "shallow-itq-16b-s0.json").stat().st_mtime_ns
    ckpt = (out / "runs" / "deep-dsh-16b-s0" / "best.pt").stat().st_mtime_ns
    (out / "cells" / "deep-dsh-16b-s0.json").unlink()
    again = run_bench(_spec(phantom_dir), out, progress=False)
    assert again["pending"] == [] and again["failed"] == []
    assert (out / "cells" / "shallow-itq-16b-s0.json").stat().st_mtime_ns == stamp
    assert (out / "runs" / "deep-dsh-16b-s0" / "best.pt").stat().st_mtime_ns == ckpt
    rescored = json.loads((out / "cells" / "deep-dsh-16b-s0.json").read_text())
    assert rescored["metrics"]["strict"]["mAP"] == pytest.approx(deep["metrics"]["strict"]["mAP"])


def _export_cell_codes(run_dir: Path, folder: Path) -> Path:
    """Write a trained cell's strict-protocol codes and dataset labels as external files."""
    model, payload = load_model(run_dir / "best.pt")
    config = payload["config"]
    dataset = open_dataset(config["data"], config["image_size"])
    split = load_split(run_dir / "split.json", dataset.case_ids)
    folder.mkdir()
    for part, prefix in (("query", "query"), ("database", "db")):
        enc = encode_dataset(model, dataset.subset(split[part]), progress=False)
        np.save(folder / f"{prefix}_codes.npy", enc.codes)
        np.save(folder / f"{prefix}_labels.npy", enc.labels)
    (folder / "bits.txt").write_text(str(config["bits"]))
    (folder / "label_names.txt").write_text("\n".join(dataset.pathologies))
    return folder


def test_budget_stops_new_cells_and_lists_them(phantom_dir: Path, tmp_path: Path) -> None:
    spec = _spec(phantom_dir, methods=(), shallow=("lsh",))
    summary = run_bench(spec, tmp_path / "b", budget_minutes=0.0, progress=False)
    assert summary["pending"] == ["shallow-lsh-16b-s0"]
    assert "Not finished (1 cells)" in (tmp_path / "b" / "report" / "report.md").read_text()


def test_folder_of_another_bench_is_refused(phantom_dir: Path, tmp_path: Path) -> None:
    spec = _spec(phantom_dir, methods=(), shallow=("lsh",))
    run_bench(spec, tmp_path / "b", budget_minutes=0.0, progress=False)
    other = BenchSpec(data=spec.data, profile="cpu-fast", grid=spec.grid)
    with pytest.raises(BenchError, match="different profile"):
        run_bench(other, tmp_path / "b", progress=False)


def _external(tmp_path: Path, signs: bool = True) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    q = rng.integers(0, 2, (12, 24))
    db = rng.integers(0, 2, (40, 24))
    q_lab = rng.integers(0, 2, (12, 3)).astype(float)
    db_lab = rng.integers(0, 2, (40, 3)).astype(float)
    folder = tmp_path / "ext"
    folder.mkdir()
    np.save(folder / "query_codes.npy", 2 * q - 1 if signs else q)
    np.save(folder / "db_codes.npy", pack_codes(db.astype(bool)) if not signs else 2 * db - 1)
    np.save(folder / "query_labels.npy", q_lab)
    np.save(folder / "db_labels.npy", db_lab)
    return folder, (q, q_lab), (db, db_lab)  # type: ignore[return-value]


def test_external_codes_are_scored_by_the_same_evaluator(tmp_path: Path) -> None:
    folder, (q, q_lab), (db, db_lab) = _external(tmp_path)
    res = score_external("other", folder)
    q_rel = add_no_finding(q_lab, ["a", "b", "c"])[0]
    db_rel = add_no_finding(db_lab, ["a", "b", "c"])[0]
    expect = code_metrics(
        pack_codes(q.astype(bool)), pack_codes(db.astype(bool)), q_rel, db_rel, (10, 100)
    )
    assert res["bits"] == 24 and res["method"] == "ext:other"
    assert res["metrics"]["strict"]["mAP"] == pytest.approx(expect["mAP"])
    assert res["metrics"]["strict"]["nDCG@100"] == pytest.approx(expect["nDCG@100"])
    n_distinct = len({tuple(r) for r in db.astype(int).tolist()})
    assert res["metrics"]["strict"]["distinct_codes"] == n_distinct  # Table 1's share beside mAP
    assert res["metrics"]["strict"]["distinct_share"] == pytest.approx(n_distinct / len(db))
    assert res["label_names"] == ["class 0", "class 1", "class 2", "No Finding"]


def _internal_scoring(
    q: np.ndarray, db: np.ndarray, q_lab: np.ndarray, db_lab: np.ndarray, no_finding: bool
) -> dict:
    """How ``run_deep_cell`` scores an internal cell's codes and dataset labels."""
    q_rel = relevance_labels(with_no_finding_np(q_lab, no_finding))
    db_rel = relevance_labels(with_no_finding_np(db_lab, no_finding))
    names = label_names(["a", "b", "c"], no_finding)
    return score_codes(q, db, q_rel, db_rel, q.shape[1] * 8, names)


@pytest.mark.parametrize("no_finding", [True, False])
def test_external_codes_score_like_an_internal_cell(tmp_path: Path, no_finding: bool) -> None:
    rng = np.random.default_rng(5)
    q, db = pack_codes(rng.random((15, 16)) < 0.5), pack_codes(rng.random((50, 16)) < 0.5)
    q_lab = (rng.random((15, 3)) < 0.25).astype(np.float32)  # many normal films
    db_lab = (rng.random((50, 3)) < 0.25).astype(np.float32)
    db_lab[0, 1] = np.nan
    folder = tmp_path / "ext"
    folder.mkdir()
    for file, arr in zip(EXTERNAL_FILES, (q, db, q_lab, db_lab), strict=True):
        np.save(folder / file, arr)
    (folder / "label_names.txt").write_text("a\nb\nc\n")
    internal = _internal_scoring(q, db, q_lab, db_lab, no_finding)
    res = score_external("other", folder, no_finding_class=no_finding)
    assert res["metrics"]["strict"] == pytest.approx(internal["metrics"])
    assert res["per_finding_ap"]["strict"] == pytest.approx(internal["per_finding_ap"])
    # a No Finding column of the file is re-derived, not counted twice
    normal = ~(np.nan_to_num(q_lab) > 0).any(axis=1, keepdims=True)
    np.save(folder / "query_labels.npy", np.hstack([q_lab, normal.astype(np.float32)]))
    normal_db = ~(np.nan_to_num(db_lab) > 0).any(axis=1, keepdims=True)
    np.save(folder / "db_labels.npy", np.hstack([db_lab, normal_db.astype(np.float32)]))
    (folder / "label_names.txt").write_text("a\nb\nc\nNo Finding\n")
    again = score_external("other", folder, no_finding_class=no_finding)
    assert again["metrics"]["strict"] == pytest.approx(internal["metrics"])


def test_packed_external_codes_with_small_bytes_use_the_declared_length(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    q_bits, db_bits = np.zeros((8, 16), bool), np.zeros((30, 16), bool)
    q_bits[:, [7, 15]] = rng.random((8, 2)) < 0.5  # only the last bit of each byte: bytes ≤ 1
    db_bits[:, [7, 15]] = rng.random((30, 2)) < 0.5
    folder = tmp_path / "ext"
    folder.mkdir()
    labels = (rng.random((8, 3)) < 0.5).astype(float), (rng.random((30, 3)) < 0.5).astype(float)
    arrays = (pack_codes(q_bits), pack_codes(db_bits), *labels)
    for file, arr in zip(EXTERNAL_FILES, arrays, strict=True):
        np.save(folder / file, arr)
    with pytest.raises(AmbiguousCodesError, match="bits.txt"):
        score_external("other", folder)
    (folder / "bits.txt").write_text("16\n")
    res = score_external("other", folder)
    expect = _internal_scoring(arrays[0], arrays[1], labels[0], labels[1], True)
    assert res["bits"] == 16
    assert res["metrics"]["strict"] == pytest.approx(expect["metrics"])


def test_external_errors_name_the_file(tmp_path: Path) -> None:
    folder, _, _ = _external(tmp_path)
    np.save(folder / "db_labels.npy", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="db_labels.npy must be N×C with N = 40"):
        score_external("other", folder)
    (folder / "query_codes.npy").unlink()
    with pytest.raises(FileNotFoundError, match="query_codes.npy"):
        score_external("other", folder)
