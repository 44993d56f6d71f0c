"""Training loop: checkpoints, resume equals an uninterrupted run, model selection on val."""

from pathlib import Path

import pytest
import torch

import cxrhash
from cxrhash.config import make_config
from cxrhash.training.checkpoint import load_checkpoint, load_model
from cxrhash.training.trainer import TrainingError, train


def _config(phantom_dir: Path, **kw: object):
    return make_config("test", data=f"phantom:{phantom_dir}", **kw)


def test_checkpoint_holds_config_labels_version(phantom_dir: Path, tmp_path: Path) -> None:
    cfg = _config(phantom_dir, epochs=1)
    result = train(cfg, tmp_path / "run", progress=False)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["config"]["bits"] == 16 and ck["config"]["backbone"] == "test-cnn"
    assert ck["label_names"][-1] == "No Finding" and "Nodule" in ck["label_names"]
    assert ck["package_version"] == cxrhash.__version__
    assert result.epochs_run == 1
    for name in ("config.json", "split.json", "best.pt", "history.json", "training_curves.png"):
        assert (tmp_path / "run" / name).exists(), name
    model, _ = load_model(tmp_path / "run")
    out = model(torch.rand(2, 1, 32, 32))
    assert out.hash.shape == (2, 16)


def test_resume_reproduces_an_uninterrupted_run(phantom_dir: Path, tmp_path: Path) -> None:
    train(_config(phantom_dir, epochs=2), tmp_path / "full", progress=False)
    train(_config(phantom_dir, epochs=1), tmp_path / "cut", progress=False)
    train(_config(phantom_dir, epochs=2), tmp_path / "cut", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_refuses_to_overwrite_or_to_resume_a_different_model(
    phantom_dir: Path, tmp_path: Path
) -> None:
    train(_config(phantom_dir, epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match="--resume"):
        train(_config(phantom_dir, epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match="bits"):
        train(_config(phantom_dir, epochs=2, bits=32), tmp_path / "run", resume=True)


def test_best_checkpoint_is_the_best_validation_epoch(phantom_dir: Path, tmp_path: Path) -> None:
    train(_config(phantom_dir, epochs=3), tmp_path / "run", progress=False)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    scores = [h["val_mAP@100"] for h in last["history"]]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["epoch"] + 1 == 1 + scores.index(max(scores))
