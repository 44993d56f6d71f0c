"""Issue #12: the thin CLI. Options come from the config dataclass, bench options parse in
the bench package, and every user error leaves through one handler: exit code 2, one
line, a traceback only with --verbose (checked through the real entry point)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from conftest import subprocess_env
from typer.testing import CliRunner

from cxrhash.bench.spec_text import bench_spec, external_dirs
from cxrhash.cli import app
from cxrhash.cli.options import dataclass_settings
from cxrhash.config import FIELD_HELP, TrainConfig

runner = CliRunner()
_BENCH = {
    "methods": "attention-fusion",
    "shallow": "",
    "bits": "16,32",
    "seeds": "0",
    "ablations": False,
    "ablation_bits": 32,
    "pretrained": None,
    "pretrain_methods": "",
    "overrides": {"epochs": 2, "backbone": None},
}


def entry_point(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``cxrhash ARGS`` as the console script runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cxrhash.cli", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=cwd,
        timeout=120,
    )


def test_every_training_setting_is_an_option_with_help() -> None:
    hints = typing.get_type_hints(TrainConfig)
    scalar = {f.name for f in dataclasses.fields(TrainConfig)} - {"data", "profile"}
    scalar -= {n for n in scalar if typing.get_origin(hints[n]) is dict}
    assert {
        s.name for s in dataclass_settings(TrainConfig, FIELD_HELP, skip=("data", "profile"))
    } == scalar
    help_text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "250"}).output
    for name in scalar - {"num_workers"}:
        assert "--" + name.replace("_", "-") in help_text, name
    assert "--workers" in help_text and "--split-fractions" in help_text and "--param" in help_text
    with pytest.raises(ValueError, match="TrainConfig.bits has no help text"):
        dataclass_settings(TrainConfig, {k: v for k, v in FIELD_HELP.items() if k != "bits"})


def test_a_generated_option_reaches_the_saved_config(phantom_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--data", f"phantom:{phantom_dir}", "--out", str(run), "--profile", "test"]
    extra = ["--epochs", "1", "--lr-gamma", "0.5", "--no-augment", "--workers", "0"]
    res = runner.invoke(app, [*args, *extra])
    assert res.exit_code == 0, res.output
    saved = TrainConfig.load(run / "config.json")
    assert (saved.lr_gamma, saved.augment, saved.epochs) == (0.5, False, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "nope:x", "--out", "r"], "unknown scheme 'nope'"),
        (["train", "--data", "phantom:x", "--out", "r", "--param", "rho"], "NAME=NUMBER"),
        (["train", "--data", "phantom:x", "--out", "r", "--split-fractions", "a=1"], "PART=SHARE"),
        (["search", "q.png", "--index", "no-such-index"], "no-such-index"),
        (["index", "--verify", "--index", "no-such-index"], "no hash index at no-such-index"),
        (["bench", "--out", "b"], "give --data"),
        (["bench", "--out", "b", "--data", "phantom:x", "--bits", "16,x"], "comma-separated"),
    ],
)
def test_a_user_error_is_one_line_and_exit_code_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    res = entry_point(*args, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_verbose_shows_the_traceback_of_a_user_error(tmp_path: Path) -> None:
    res = entry_point("train", "--data", "nope:x", "--out", str(tmp_path / "r"), "--verbose")
    assert res.returncode != 0 and "Traceback" in res.stderr and "unknown scheme" in res.stderr


def test_bench_options_parse_into_a_checked_spec() -> None:
    spec = bench_spec("phantom:x", "bench", **_BENCH)  # type: ignore[arg-type]
    assert (
        spec.grid.bits == (16, 32) and spec.grid.shallow == () and spec.overrides == {"epochs": 2}
    )
    with pytest.raises(ValueError, match="unknown shallow baseline"):
        bench_spec("phantom:x", "bench", **{**_BENCH, "shallow": "lsh,nope"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        bench_spec("phantom:x", "gpu", **_BENCH)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        bench_spec("phantom:x", "bench", **{**_BENCH, "methods": "nope"})  # type: ignore[arg-type]
    assert external_dirs(["ours=/x/y"]) == {"ours": Path("/x/y")}
    with pytest.raises(ValueError, match="NAME=DIR"):
        external_dirs(["ours"])
