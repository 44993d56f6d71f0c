"""The training engine: schedule, clipping, resume checks and the divergence guard."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from cxrhash.data.dataset import SkippedSample
from cxrhash.training.engine import (
    DivergenceError,
    EngineSettings,
    StepOutput,
    TrainingError,
    check_resume_config,
    fit,
    load_state,
)


class _Points(Dataset):
    """A fixed regression set: y = x·w* + noise."""

    def __init__(self, n: int = 64, dim: int = 4) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ torch.arange(1.0, dim + 1) + 0.01 * torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "y": self.y[i]}


class ToyTask:
    """Least squares on :class:`_Points`; ``poison`` makes chosen (epoch, step) losses bad."""

    kind: str = "toy"
    curves_name: str = "curves.png"
    score_key: str | None = "val_neg_mse"
    resumable: tuple[str, ...] = ("epochs",)

    def __init__(self, poison: Mapping[tuple[int, int], float] | None = None, once: bool = True):
        self.data = _Points()
        self.poison = dict(poison or {})
        self.once = once
        self.epoch = 0
        self.step = 0
        self.finished = False

    def prepare(self, run_dir: Path, saved: Mapping[str, Any] | None) -> None:
        return None

    def build_model(self) -> nn.Module:
        return nn.Linear(4, 1)

    def train_set(self) -> Dataset:
        return self.data

    def collate(self, items: list[Any]) -> dict[str, Any]:
        return {
            "x": torch.stack([i["x"] for i in items]),
            "y": torch.stack([i["y"] for i in items]),
            "skipped": [],
        }

    def on_epoch_start(self, model: nn.Module, epoch: int, steps_per_epoch: int) -> None:
        self.epoch, self.step = epoch, 0

    def training_step(
        self, model: nn.Module, batch: dict[str, Any], device: torch.device
    ) -> StepOutput | None:
        self.step += 1
        loss = (model(batch["x"]).squeeze(1) - batch["y"]).pow(2).mean()
        key = (self.epoch, self.step)
        if key in self.poison:
            loss = loss * self.poison[key]
            if self.once:
                del self.poison[key]
        return StepOutput(loss, {"total": float(loss.detach())}, len(batch["x"]))

    def after_step(self, model: nn.Module) -> None:
        return None

    def validate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        with torch.no_grad():
            mse = (model(self.data.x).squeeze(1) - self.data.y).pow(2).mean()
        return {"val_neg_mse": -float(mse)}

    def checkpoint_extra(self, model: nn.Module) -> dict[str, Any]:
        return {}

    def check_resume(self, saved: Mapping[str, Any]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None

    def finish(self, model: nn.Module, run_dir: Path) -> None:
        self.finished = True


def _settings(**kw: Any) -> EngineSettings:
    base: dict[str, Any] = {"epochs": 3, "batch_size": 8, "lr": 0.05, "lr_step_epoch": 2}
    return EngineSettings(**{**base, **kw})


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_state(run_dir / "last.pt", "toy")["model"]


def test_paper_schedule_drops_once_after_epoch_20_with_linear_warmup() -> None:
    s = EngineSettings(epochs=50, batch_size=64, lr=0.01, lr_step_epoch=20, lr_gamma=0.1)
    lrs = [s.epoch_lr(e) for e in range(50)]
    assert lrs[:20] == [0.01] * 20
    assert lrs[20:] == pytest.approx([0.001] * 30)  # no second drop at epoch 40 (StepLR's)
    warm = EngineSettings(epochs=2, batch_size=8, lr=0.1, warmup_epochs=0.5)
    assert [warm.step_lr(0, k, 10) for k in range(6)] == pytest.approx(
        [0.02, 0.04, 0.06, 0.08, 0.1, 0.1]
    )
    assert warm.step_lr(1, 12, 10, lr_factor=0.5) == pytest.approx(0.05)
    cosine = EngineSettings(epochs=4, batch_size=8, lr=1.0, schedule="cosine")
    assert [cosine.epoch_lr(e) for e in range(4)] == pytest.approx(
        [1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4)]
    )
    with pytest.raises(TrainingError, match="lr_gamma"):
        EngineSettings(epochs=1, batch_size=8, lr=0.1, lr_gamma=2.0)


def test_a_nan_loss_rolls_back_lowers_the_lr_and_training_continues(tmp_path: Path) -> None:
    task = ToyTask(poison={(1, 3): math.nan})
    result = fit(task, _settings(), tmp_path / "run", {"lr": 0.05}, progress=False)
    assert task.finished and result.epochs_run == 3
    assert len(result.rollbacks) == 1
    rb = result.rollbacks[0]
    assert (rb.epoch, rb.step, rb.lr_factor) == (2, 3, 0.5) and "nan" in rb.reason
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["rollbacks"] for h in history] == [0, 1, 0]
    assert history[1]["lr"] == pytest.approx(0.025)  # halved after the rollback
    assert history[2]["lr"] == pytest.approx(0.0025)  # and the schedule's drop on top
    assert json.loads((tmp_path / "run" / "rollbacks.json").read_text())[0]["step"] == 3
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "run").values())
    assert history[-1]["val_neg_mse"] > history[0]["val_neg_mse"]  # and it still learns


def test_an_exploding_loss_is_caught_like_a_nan(tmp_path: Path) -> None:
    task = ToyTask(poison={(0, 7): 1e6})
    result = fit(task, _settings(epochs=1), tmp_path / "run", {}, progress=False)
    assert len(result.rollbacks) == 1 and "exploded" in result.rollbacks[0].reason


def test_rollback_restores_the_epoch_start_exactly(tmp_path: Path) -> None:
    """A NaN at step 4 rolls back the three steps before it (weights and momentum) to the
    initial state, so the run must equal a clean run at half the learning rate, bit for bit."""
    fit(ToyTask(poison={(0, 4): math.nan}), _settings(), tmp_path / "a", {}, progress=False)
    fit(ToyTask(), _settings(lr=0.025), tmp_path / "b", {}, progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_divergence_at_an_epochs_first_step_goes_back_one_epoch(tmp_path: Path) -> None:
    """At step 1 no step of the epoch was applied, so its start is the damaged state (the last
    update of the epoch before was saved unchecked): the engine must redo that epoch at the
    lowered rate. The run then equals a clean run at half the learning rate, bit for bit
    (restoring only the epoch start would keep epoch 1's steps at the full rate)."""
    run = tmp_path / "a"
    result = fit(ToyTask(poison={(1, 1): 1e6}), _settings(), run, {}, progress=False)
    fit(ToyTask(), _settings(lr=0.025), tmp_path / "b", {}, progress=False)
    a, b = _weights(run), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rb = result.rollbacks[0]
    assert (rb.epoch, rb.step, rb.to_epoch) == (2, 1, 1)
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_gives_up_with_a_clear_message_after_the_allowed_rollbacks(tmp_path: Path) -> None:
    task = ToyTask(poison={(0, 2): math.inf}, once=False)
    with pytest.raises(DivergenceError, match=r"after 2 rollback\(s\).*--lr"):
        fit(task, _settings(max_rollbacks=2), tmp_path / "run", {}, progress=False)


def test_gradient_clipping_bounds_the_update(tmp_path: Path) -> None:
    """With plain SGD (no momentum or decay) one clipped step moves the weights by ≤ lr·clip."""
    task = ToyTask(poison={(0, 1): 1e3})  # a large but finite first loss: a huge gradient
    settings = _settings(
        epochs=1, momentum=0.0, weight_decay=0.0, grad_clip=0.5, lr=1.0, explode_factor=1e9
    )
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in nn.Linear(4, 1).state_dict().items()}  # seed-0 init
    task.data = _Points(n=8)  # one batch: one step
    fit(task, settings, tmp_path / "run", {}, progress=False)
    after = _weights(tmp_path / "run")
    moved = torch.cat([(after[k] - before[k]).flatten() for k in before]).norm()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["grad_norm_max"] > 100  # the norm before clipping is recorded
    assert 0 < float(moved) <= 0.5 + 1e-6


def test_resume_refuses_changed_settings_but_accepts_more_epochs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(ToyTask(), _settings(epochs=1), run, {"lr": 0.05, "epochs": 1}, progress=False)
    with pytest.raises(TrainingError, match="--resume"):
        fit(ToyTask(), _settings(epochs=1), run, {"lr": 0.05, "epochs": 1}, progress=False)
    with pytest.raises(TrainingError, match=r"lr \(0.05 vs 0.1\).*only epochs may change"):
        fit(ToyTask(), _settings(epochs=2), run, {"lr": 0.1, "epochs": 2}, resume=True)
    result = fit(
        ToyTask(), _settings(epochs=2), run, {"lr": 0.05, "epochs": 2}, resume=True, progress=False
    )
    assert result.epochs_run == 1 and len(result.history) == 2
    with pytest.raises(TrainingError, match="nothing to resume"):
        fit(ToyTask(), _settings(), tmp_path / "new", {}, resume=True)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    fit(ToyTask(), _settings(), tmp_path / "full", {}, progress=False)
    fit(ToyTask(), _settings(epochs=1), tmp_path / "cut", {}, progress=False)
    fit(ToyTask(), _settings(), tmp_path / "cut", {}, resume=True, progress=False)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_check_resume_config_names_every_difference() -> None:
    with pytest.raises(TrainingError, match=r"bits \(16 vs 32\), data \('a' vs 'b'\)"):
        saved = {"bits": 16, "data": "a", "epochs": 1}
        check_resume_config(saved, {"bits": 32, "data": "b", "epochs": 5}, ["epochs"])
    check_resume_config({"epochs": 1, "x": 1}, {"epochs": 5, "x": 1}, ["epochs"])


def test_mixed_precision_and_channels_last_run_where_forced(tmp_path: Path) -> None:
    """On CPU `auto` leaves both off; `on` forces bfloat16 autocast with loss scaling."""
    result = fit(
        ToyTask(), _settings(amp="on", channels_last="on"), tmp_path / "run", {}, progress=False
    )
    losses = [h["loss_total"] for h in result.history]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


class _Foreign:
    """An arbitrary pickled object, as a hostile checkpoint would carry."""


def test_a_checkpoint_holding_foreign_objects_is_refused_without_running_it(
    tmp_path: Path,
) -> None:
    torch.save({"format": 2, "kind": "toy", "x": _Foreign()}, tmp_path / "evil.pt")
    with pytest.raises(TrainingError, match="not a cxrhash checkpoint") as info:
        load_state(tmp_path / "evil.pt", "toy")
    assert "weights_only=False" not in str(info.value)  # never advise running its code
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="not a cxrhash checkpoint"):
        load_state(tmp_path / "junk.pt", "toy")


class _BadFilesTask(ToyTask):
    """Every epoch, the first batch reports the same two unreadable files."""

    def collate(self, items: list[Any]) -> dict[str, Any]:
        batch = super().collate(items)
        if self.step == 0:
            batch["skipped"] = [
                SkippedSample(idx=3, case_id="a", path="/data/a.png", reason="truncated"),
                SkippedSample(idx=9, case_id="b", path="/data/b.png", reason="too many pixels"),
            ]
        return batch


def test_a_bad_file_is_counted_once_not_once_per_epoch(tmp_path: Path) -> None:
    """Issue #11: 2 bad files over 3 epochs were reported as 5 skipped."""
    result = fit(_BadFilesTask(), _settings(), tmp_path / "run", {"lr": 0.05}, progress=False)
    assert result.epochs_run == 3
    assert sorted(s.path for s in result.skipped) == ["/data/a.png", "/data/b.png"]
