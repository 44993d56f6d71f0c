"""Query heat-maps: the network's attention, or Grad-CAM of its predicted findings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cxrhash.evaluation.localization import pointing_game
from cxrhash.models.attention_fusion import AttentionFusionNet
from cxrhash.models.heatmaps import backbone_gradcam, query_heatmaps
from cxrhash.models.output import HashOutput
from cxrhash.models.saliency import grad_cam


class Brightness(nn.Module):
    """logit = mean brightness: Grad-CAM of it is the image itself (peak = brightest pixel)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Identity()

    def forward(self, x: Tensor) -> HashOutput:
        logits = self.backbone(x).mean(dim=(2, 3))
        return HashOutput(hash=logits, logits=logits, features=logits)


def _net() -> AttentionFusionNet:
    torch.manual_seed(0)
    return AttentionFusionNet(bits=8, num_classes=3, backbone="test-cnn", refine_width=16)


def test_gradcam_is_grad_cam_of_the_predicted_findings_on_the_backbone_map() -> None:
    net = _net().train()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():  # as in search: the heat-map turns gradients on for itself
        out, cam = backbone_gradcam(net, x)
    assert net.training  # the mode is restored
    net.eval()
    fmap = net.backbone(x).detach().requires_grad_(True)
    fp = net.local_pool(fmap)
    parts = [net.refine_global(fmap), net.refine_local(net.attention(fp) * fp)]
    logits = net.head(net.fc(torch.cat(parts, dim=1)))[1]
    expect = grad_cam(fmap, (torch.sigmoid(logits).detach() * logits).sum())
    assert cam.shape == (2, 1, *fmap.shape[-2:]) and (cam >= 0).all()
    torch.testing.assert_close(cam, expect.detach())
    with torch.no_grad():
        torch.testing.assert_close(out.hash, net(x).hash)
    assert not out.hash.requires_grad and all(p.grad is None for p in net.parameters())


def test_attention_heatmap_is_the_networks_own_map() -> None:
    net = _net().eval()
    x = torch.rand(2, 1, 32, 32)
    out, maps = query_heatmaps(net, x, "attention")
    assert maps is out.attention and maps is not None
    with pytest.raises(ValueError, match="attention, gradcam"):
        query_heatmaps(net, x, "saliency")
    with pytest.raises(TypeError, match="no backbone"):
        backbone_gradcam(nn.Linear(2, 2), x)


def test_pointing_game_with_gradcam_finds_a_planted_bright_spot() -> None:
    images = np.zeros((3, 16, 16), np.float32)
    masks = np.zeros((3, 1, 16, 16), bool)
    for i, (r, c) in enumerate([(3, 4), (10, 12), (7, 2)]):
        images[i, r, c] = 1.0
        masks[i, 0, r - 1 : r + 2, c - 1 : c + 2] = True
    result = pointing_game(Brightness(), images, masks, heatmap="gradcam")
    assert result.hit_rate == 1.0 and result.n_images == 3
    with pytest.raises(ValueError, match="no attention"):
        pointing_game(Brightness(), images, masks)
