"""The whole pipeline on the real NIH films of ../shared/data/cxr-dev (both folders)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrhash.cli import app

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_train_eval_on_real_nih_films(cxr_dev: Path, tmp_path: Path) -> None:
    root = cxr_dev
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["train", "--data", f"nih:{root}", "--out", str(run), "--profile", "test", "--epochs", "1"],
    )
    assert res.exit_code == 0, (res.output, res.exception)
    split = json.loads((run / "split.json").read_text())
    assert sum(len(v) for v in split["parts"].values()) == 1088  # images/ + lowres/
    res = runner.invoke(app, ["eval", str(run), "--json", "--random-seeds", "1"])
    assert res.exit_code == 0, (res.output, res.exception)
    report = json.loads(res.output)
    lit, strict = report["protocols"]["literature"], report["protocols"]["strict"]
    total = lit["n_database"] + strict["n_query"] + strict["n_database"]
    assert 0.6 * 1088 < total <= 1088  # train + query + database parts of all 1,088 films
    assert report["skipped"] == 0
