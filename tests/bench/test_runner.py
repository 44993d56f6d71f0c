"""`cxrhash bench` end to end on phantom films: cells, resume, budget, external codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxrhash.bench.cells import score_external
from cxrhash.bench.grid import GridSpec
from cxrhash.bench.runner import BenchError, BenchSpec, run_bench
from cxrhash.evaluation.evaluate import code_metrics
from cxrhash.index.codes import pack_codes


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
    # every method saw the same cached split
    run_split = json.loads((out / "runs" / "deep-dsh-16b-s0" / "split.json").read_text())
    assert run_split == json.loads((out / "splits" / "seed0.json").read_text())
    assert (out / "report" / "report.md").exists() and Path(summary["report"]).exists()

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
    expect = code_metrics(
        pack_codes(q.astype(bool)), pack_codes(db.astype(bool)), q_lab, db_lab, (10, 100)
    )
    assert res["bits"] == 24 and res["method"] == "ext:other"
    assert res["metrics"]["strict"]["mAP"] == pytest.approx(expect["mAP"])
    assert res["metrics"]["strict"]["nDCG@100"] == pytest.approx(expect["nDCG@100"])


def test_external_errors_name_the_file(tmp_path: Path) -> None:
    folder, _, _ = _external(tmp_path)
    np.save(folder / "db_labels.npy", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="db_labels.npy must be N×C with N = 40"):
        score_external("other", folder)
    (folder / "query_codes.npy").unlink()
    with pytest.raises(FileNotFoundError, match="query_codes.npy"):
        score_external("other", folder)
