"""The demo reuses a finished run, and trains anew beside a run it cannot read."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from cxrhash.demo import run_demo


def test_demo_moves_an_unreadable_run_aside_and_trains_anew(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": 1, "model": {}}, run / "last.pt")  # a run of an older cxrhash
    metrics = run_demo(tmp_path, n_images=120, epochs=1, console=Console(quiet=True))
    assert 0.0 <= metrics["mAP"] <= 1.0
    assert (run / "best.pt").exists()
    stale = list(tmp_path.glob("run-unreadable-*"))
    assert len(stale) == 1 and (stale[0] / "last.pt").exists()
