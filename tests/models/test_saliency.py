"""Grad-CAM (closed form vs autograd), Otsu thresholding and crop boxes, on phantom lesion masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrhash.data.phantom import PHANTOM_FINDINGS, generate_phantom
from cxrhash.models.saliency import (
    class_activation_map,
    grad_cam,
    mask_boxes,
    normalize_maps,
    otsu_mask,
    otsu_threshold,
)


def _otsu_loop(values: np.ndarray) -> float:
    v = np.sort(values.ravel())
    best, t = -1.0, float(v[0])
    for k in range(1, len(v)):
        if v[k] == v[k - 1]:
            continue
        lo, hi = v[:k], v[k:]
        w0, w1 = len(lo) / len(v), len(hi) / len(v)
        between = w0 * w1 * (lo.mean() - hi.mean()) ** 2
        if between > best:
            best, t = between, 0.5 * (v[k - 1] + v[k])
    return t


def test_otsu_matches_an_exhaustive_search() -> None:
    rng = np.random.default_rng(0)
    maps = np.concatenate([rng.normal(0.2, 0.05, (3, 30)), rng.normal(0.8, 0.05, (3, 10))], 1)
    got = otsu_threshold(torch.from_numpy(maps))
    for i in range(3):
        assert float(got[i]) == pytest.approx(_otsu_loop(maps[i]))
        assert 0.35 < float(got[i]) < 0.65  # between the two modes


def test_constant_map_has_empty_foreground() -> None:
    assert not otsu_mask(torch.full((1, 1, 4, 4), 0.3)).any()


def test_closed_form_cam_equals_autograd_grad_cam() -> None:
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(3, 8, 5, 5, generator=g).relu().requires_grad_(True)
    cls = torch.nn.Linear(8, 4)
    logits = cls(fmap.mean(dim=(2, 3)))
    probs = torch.sigmoid(logits).detach()
    auto = grad_cam(fmap, (probs * logits).sum())
    closed = class_activation_map(fmap, cls.weight, probs)
    assert torch.allclose(auto, closed, atol=1e-6)


def _lesion_films(finding: str, n: int = 40) -> list:
    idx = PHANTOM_FINDINGS.index(finding)
    return [s for s in generate_phantom(n, 64, seed=3) if s.labels[idx] == 1][:4], idx


@pytest.mark.parametrize("finding", ["Mass", "Consolidation"])
def test_grad_cam_and_otsu_recover_the_phantom_lesion(finding: str) -> None:
    """A classifier that reads a lesion channel: Grad-CAM + Otsu must land on the lesion mask.

    Feature map = [film; lesion-mask channel], both average-pooled to stride 4.
    The class weight is on the lesion channel only, so the true Grad-CAM is the
    lesion channel and Otsu must separate it from the background; a CAM that
    picked the wrong channel or a threshold in the wrong place would give a
    region overlapping the lesion poorly.
    """
    films, idx = _lesion_films(finding)
    assert films, f"no phantom film with {finding}"
    img = torch.stack([torch.from_numpy(s.image / 255.0).float() for s in films]).unsqueeze(1)
    mask = torch.stack([torch.from_numpy(s.masks[idx]).float() for s in films]).unsqueeze(1)
    fmap = F.avg_pool2d(torch.cat([img, mask], dim=1), 4).requires_grad_(True)
    weight = torch.tensor([[0.0, 1.0]])
    logits = fmap.mean(dim=(2, 3)) @ weight.T
    probs = torch.sigmoid(logits).detach()
    cam = grad_cam(fmap, (probs * logits).sum())
    assert torch.allclose(cam, class_activation_map(fmap, weight, probs), atol=1e-6)
    region = otsu_mask(normalize_maps(cam))
    small_mask = F.avg_pool2d(mask, 4) > 0.5
    for r, m in zip(region, small_mask, strict=True):
        inter = float((r & m).sum())
        union = float((r | m).sum())
        assert union > 0 and inter / union > 0.6


def test_mask_boxes_cover_the_mask_and_respect_minimum_size() -> None:
    mask = torch.zeros(2, 1, 40, 40, dtype=torch.bool)
    mask[0, 0, 10:20, 5:30] = True  # 25 wide, 10 high → height widened to 10 (=0.25·40)
    mask[1, 0, 0:2, 38:40] = True  # corner: widened and clipped inside the image
    boxes = mask_boxes(mask, 0.25)
    assert boxes[0].tolist() == [5.0, 10.0, 30.0, 20.0]
    x0, y0, x1, y1 = boxes[1].tolist()
    assert x1 == 40.0 and y0 == 0.0 and x1 - x0 == pytest.approx(10.0)
    assert y1 - y0 == pytest.approx(10.0)
    empty = mask_boxes(torch.zeros(1, 1, 8, 8, dtype=torch.bool))
    assert empty[0].tolist() == [0.0, 0.0, 8.0, 8.0]
