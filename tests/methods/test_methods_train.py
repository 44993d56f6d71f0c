"""Every registered method trains a few steps on phantom films, reloads, encodes and evaluates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cxrhash.config import make_config
from cxrhash.methods import METHODS
from cxrhash.models.saliency import normalize_maps, otsu_mask
from cxrhash.models.semantic_attention import SemanticAttentionNet
from cxrhash.training.checkpoint import load_model
from cxrhash.training.evaluate_run import evaluate_run
from cxrhash.training.trainer import train

ALL = METHODS.names()


def test_the_papers_and_baselines_are_registered() -> None:
    expected = {"attention-fusion", "osdh", "semantic-attention", "saliency-fusion"}
    expected |= {"dh", "dsh", "dpsh", "hashnet", "drh", "ath"}
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_method_trains_reloads_and_evaluates(name: str, phantom_dir: Path, tmp_path: Path) -> None:
    cfg = make_config("test", data=f"phantom:{phantom_dir}", method=name, epochs=1)
    run = tmp_path / name
    train(cfg, run, progress=False)
    history = json.loads((run / "history.json").read_text())
    assert math.isfinite(history[0]["loss_total"])
    model, payload = load_model(run / "best.pt")
    assert payload["config"]["method"] == name
    fresh = METHODS.get(name).build_model(cfg, len(payload["label_names"]))
    trained = dict(model.named_parameters())
    assert any(not torch.equal(p, trained[k]) for k, p in fresh.named_parameters())
    results, facts = evaluate_run(run, protocols=("strict",), progress=False, random_seeds=1)
    assert 0.0 <= results[0].rows["hash codes"]["mAP"] <= 1.0
    assert facts["method"] == name


def test_unknown_method_parameter_is_a_clear_error(phantom_dir: Path, tmp_path: Path) -> None:
    cfg = make_config("test", data=f"phantom:{phantom_dir}", method="dsh", method_params={"rho": 1})
    with pytest.raises(ValueError, match="'dsh' has no parameter.*alpha, margin_factor"):
        train(cfg, tmp_path / "r", progress=False)


def test_semantic_attention_local_descriptor_pools_the_otsu_region() -> None:
    torch.manual_seed(0)
    net = SemanticAttentionNet(bits=8, num_classes=3, backbone="test-cnn").eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = net(x)
        fmap = net.backbone(x)
        g = fmap.mean(dim=(2, 3))
        region = otsu_mask(normalize_maps(out.attention)).float()
        local = (fmap * region).sum((2, 3)) / region.sum((2, 3))
        expect = net.fc(torch.cat([g, local], 1))
    assert region.sum() > 0 and (region.sum((2, 3)) < region[0, 0].numel()).all()
    assert torch.allclose(out.features, expect, atol=1e-6)
