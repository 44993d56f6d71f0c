"""The heat-maps a query can be shown with: the network's attention, or Grad-CAM of its findings.

* ``attention`` — the map the network computes itself (attention-fusion's M(F'), the
  saliency models' class-activation map); ``None`` for networks without one.
* ``gradcam`` — Grad-CAM (Selvaraju et al. 2017) of Σ_c p_c·logit_c on the backbone's
  output map, p the detached sigmoid probabilities: where the evidence for the findings the
  network believes present lies. Any network with a ``backbone`` module has one; it costs a
  backward pass through the head, so it is computed for queries, never while indexing.

On phantom films at 128 px attention-fusion's attention peak falls on a lesion at chance
rate (its peak sits on the map's border in 95–99 % of films), while Grad-CAM's falls on one
2–3 times as often (``docs/benchmarks-notes.md``, "Issue #10"). Neither is a lesion detector.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cxrhash.models.output import HashOutput
from cxrhash.models.saliency import grad_cam

HEATMAPS = ("attention", "gradcam")
#: What each heat-map is, in words a person reading a figure or an API answer can use.
HEATMAP_TITLES = {
    "attention": "network attention",
    "gradcam": "Grad-CAM of the predicted findings",
}


def check_heatmap(kind: str) -> str:
    """``kind`` if it is one of ``HEATMAPS``, else a ``ValueError`` naming them."""
    if kind not in HEATMAPS:
        raise ValueError(f"heat-map must be one of {', '.join(HEATMAPS)}; got {kind!r}")
    return kind


def backbone_gradcam(model: nn.Module, x: Tensor) -> tuple[HashOutput, Tensor]:
    """The model's output for ``x`` (detached) and the Grad-CAM of its findings, B×1×h×w ≥ 0.

    The backbone's output is cut from the backbone's graph, so only the head is
    differentiated; works inside ``torch.no_grad``. The model is run in eval mode.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{type(model).__name__} has no backbone to take a Grad-CAM from")
    captured: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        fmap = output.detach().requires_grad_(True)
        captured.append(fmap)
        return fmap

    was_training = model.training
    model.eval()
    handle = backbone.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            out = model(x)
            if not captured:
                raise TypeError(f"{type(model).__name__}'s forward does not use its backbone")
            score = (torch.sigmoid(out.logits).detach() * out.logits).sum()
            cam = grad_cam(captured[0], score).detach()
    finally:
        handle.remove()
        model.train(was_training)
    detached = HashOutput(
        hash=out.hash.detach(),
        logits=out.logits.detach(),
        features=out.features.detach(),
        attention=None if out.attention is None else out.attention.detach(),
    )
    return detached, cam


def query_heatmaps(model: nn.Module, x: Tensor, kind: str) -> tuple[HashOutput, Tensor | None]:
    """The model's output for ``x`` and the heat-maps of ``kind`` (``None``: the network has
    no attention map)."""
    if check_heatmap(kind) == "gradcam":
        return backbone_gradcam(model, x)
    with torch.no_grad():
        out = model(x)
    return out, out.attention
