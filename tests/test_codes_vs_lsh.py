"""benchmarks/codes_vs_lsh.py: per-query codes − LSH with a standard error."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from cxrhash.config import make_config
from cxrhash.evaluation.evaluate import code_metrics
from cxrhash.index.codes import pack_codes
from cxrhash.training.trainer import train

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("codes_vs_lsh", None)
    import codes_vs_lsh

    return codes_vs_lsh


def test_paired_difference_is_the_mean_and_its_standard_error(script: ModuleType) -> None:
    r = script.paired_difference(np.array([0.5, 0.7, 0.9, 0.4]), np.array([0.4, 0.7, 0.6, 0.6]))
    d = np.array([0.1, 0.0, 0.3, -0.2])
    assert r["mean"] == pytest.approx(0.05)
    assert r["se"] == pytest.approx(d.std(ddof=1) / 2)
    assert (r["ahead"], r["behind"], r["n"]) == (2, 1, 4)
    with pytest.raises(ValueError, match="≥ 2"):
        script.paired_difference(np.array([1.0]), np.array([0.0]))


def test_per_query_ap_averages_to_the_evaluations_map(script: ModuleType) -> None:
    rng = np.random.default_rng(0)
    q_bits, db_bits = rng.integers(0, 2, (12, 16)) > 0, rng.integers(0, 2, (40, 16)) > 0
    q_lab, db_lab = rng.integers(0, 2, (12, 3)), rng.integers(0, 2, (40, 3))
    q_lab[:, 0] |= q_lab.sum(1) == 0
    db_lab[:, 0] |= db_lab.sum(1) == 0
    q, db = pack_codes(q_bits), pack_codes(db_bits)
    per_query = script.per_query_ap(q, db, q_lab, db_lab)
    assert per_query.shape == (12,)
    assert per_query.mean() == pytest.approx(code_metrics(q, db, q_lab, db_lab, (10,))["mAP"])


def test_compare_run_on_a_trained_run(
    script: ModuleType, phantom_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config("test", data=f"phantom:{phantom_dir}", method="attention-fusion", epochs=1)
    train(cfg, tmp_path / "run", progress=False)
    r = script.compare_run(tmp_path / "run")
    assert 0 <= r["codes"] <= 1 and 0 <= r["lsh"] <= 1
    assert r["mean"] == pytest.approx(r["codes"] - r["lsh"])
    assert r["ahead"] + r["behind"] <= r["n"]
