"""Class-activation saliency, Otsu thresholds and mask boxes (semantic-attention, saliency-fusion).

Both papers localise the lesion from a classification network's activation
(Grad-CAM) and threshold it (Otsu). Our classifiers are global average pooling
followed by one linear layer, where Grad-CAM has a closed form: for the score
y = Σ_c p_c·logit_c, ∂y/∂F_k(x, y) = Σ_c p_c·W_ck / (h·w) at every position, so
the Grad-CAM channel weights are Σ_c p_c·W_ck / (h·w) and the map is
ReLU(Σ_k weight_k·F_k) — no backward pass needed, so it also runs under
``torch.no_grad`` at indexing time. ``grad_cam`` is the autograd version used to
test that identity. p = the detached sigmoid probabilities, so the map shows
the evidence for the findings the network believes present (multi-label
Grad-CAM; the papers do not say how they pick the class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def class_activation_map(fmap: Tensor, weight: Tensor, probs: Tensor) -> Tensor:
    """Closed-form Grad-CAM of Σ_c p_c·logit_c for a GAP + linear classifier, B×1×h×w, ≥ 0.

    Args:
        fmap: B×K×h×w features F fed to global average pooling.
        weight: C×K classifier weight W.
        probs: B×C class weights p (detached inside).
    """
    h, w = fmap.shape[-2:]
    channel_w = probs.detach() @ weight / (h * w)  # B×K
    return F.relu(torch.einsum("bk,bkhw->bhw", channel_w, fmap)).unsqueeze(1)


def grad_cam(fmap: Tensor, score: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju 2017) by autograd: ReLU(Σ_k GAP(∂score/∂F_k)·F_k), B×1×h×w.

    ``score`` is a scalar that depends on ``fmap`` (e.g. Σ_b Σ_c p_bc·logit_bc).
    """
    (grads,) = torch.autograd.grad(score, fmap, retain_graph=True)
    channel_w = grads.mean(dim=(2, 3))
    return F.relu(torch.einsum("bk,bkhw->bhw", channel_w, fmap)).unsqueeze(1)


def normalize_maps(maps: Tensor) -> Tensor:
    """Min–max scale each map of B×1×h×w to [0, 1] (a constant map becomes all zeros)."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)


def otsu_threshold(maps: Tensor) -> Tensor:
    """Otsu's threshold of each map (B×…), exact over the map's own values, shape B.

    Sorts the n values and picks the split maximising the between-class variance
    w₀·w₁·(μ₀ − μ₁)² among the n − 1 cuts between consecutive values; the
    threshold is the midpoint of the cut, so ``map > t`` is the upper class.
    A constant map gets its value as threshold (empty foreground).
    """
    flat = maps.detach().flatten(1).double()
    v, _ = flat.sort(dim=1)
    n = v.shape[1]
    if n < 2:
        return v[:, 0].to(maps.dtype)
    csum = v.cumsum(dim=1)
    total = csum[:, -1:]
    k = torch.arange(1, n, device=v.device, dtype=v.dtype)  # size of the lower class
    mu0 = csum[:, :-1] / k
    mu1 = (total - csum[:, :-1]) / (n - k)
    between = (k / n) * (1 - k / n) * (mu0 - mu1).pow(2)
    between = torch.where(v[:, 1:] > v[:, :-1], between, torch.full_like(between, -1.0))
    best = between.argmax(dim=1)
    rows = torch.arange(v.shape[0], device=v.device)
    t = 0.5 * (v[rows, best] + v[rows, best + 1])
    constant = v[:, -1] <= v[:, 0]
    return torch.where(constant, v[:, 0], t).to(maps.dtype)


def otsu_mask(maps: Tensor) -> Tensor:
    """Boolean B×1×h×w foreground ``map > otsu_threshold(map)`` of each map."""
    t = otsu_threshold(maps).view(-1, *([1] * (maps.ndim - 1)))
    return maps.detach() > t


def mask_boxes(mask: Tensor, min_fraction: float = 0.25) -> Tensor:
    """Bounding box (x0, y0, x1, y1) in pixels of each B×1×H×W mask, at least ``min_fraction`` wide.

    Boxes are widened symmetrically (and clipped to the image) to the minimum
    side so a crop never degenerates; an empty mask gives the whole image.
    """
    b, _, hgt, wid = mask.shape
    boxes = torch.zeros(b, 4, dtype=torch.float32, device=mask.device)
    for i in range(b):
        ys, xs = torch.nonzero(mask[i, 0], as_tuple=True)
        if len(ys) == 0:
            boxes[i] = torch.tensor([0.0, 0.0, wid, hgt])
            continue
        box = [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]
        for lo, hi, side in ((0, 2, wid), (1, 3, hgt)):
            need = min_fraction * side - (box[hi] - box[lo])
            if need > 0:
                box[lo] -= need / 2
                box[hi] += need / 2
                shift = max(0.0, -box[lo]) - max(0.0, box[hi] - side)
                box[lo] += shift
                box[hi] += shift
        boxes[i] = torch.tensor(box)
    return boxes
