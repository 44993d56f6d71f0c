from pathlib import Path

import pytest

from cxrhash.config import PROFILES, TrainConfig, make_config


def test_paper_profile_is_the_papers_setting() -> None:
    c = make_config("paper")
    assert (c.backbone, c.image_size, c.epochs, c.batch_size) == ("resnet50", 224, 50, 64)
    assert (c.optimizer, c.lr, c.lr_step_epoch, c.lr_gamma) == ("sgd", 0.01, 20, 0.1)
    assert (c.momentum, c.weight_decay, c.alpha, c.beta) == (0.9, 1e-4, 0.5, 0.5)


def test_profile_overrides_and_none_keeps(tmp_path: Path) -> None:
    c = make_config("cpu", bits=16, epochs=None)
    assert c.backbone == "resnet18" and c.bits == 16 and c.epochs == PROFILES["cpu"]["epochs"]
    c.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == c


def test_unknown_profile_and_key_are_named() -> None:
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        make_config("gpu")
    with pytest.raises(ValueError, match="unknown config keys \\['bitz'\\]"):
        TrainConfig.from_dict({"bitz": 3})


def test_paper_profile_takes_the_methods_paper_backbone_unless_backbone_is_given() -> None:
    assert make_config("paper", paper_backbone="densenet121").backbone == "densenet121"
    explicit = make_config("paper", paper_backbone="densenet121", backbone="resnet18")
    assert explicit.backbone == "resnet18"
    # other profiles keep their own (CPU-sized) backbone
    assert make_config("cpu", paper_backbone="densenet121").backbone == "resnet18"
    assert make_config("paper", paper_backbone=None).backbone == "resnet50"
