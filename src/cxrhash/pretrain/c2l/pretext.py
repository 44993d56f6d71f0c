"""The pretext check: does the network tell the images apart at all (own key nearest to
its query, on fixed views, apart from the queue and from batch statistics)?"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cxrhash.pretrain.c2l.model import C2LModel
from cxrhash.pretrain.unlabeled import UnlabeledImages, collate_views

PRETEXT_IMAGES = 256


def pretext_views(dataset: UnlabeledImages, n: int, seed: int) -> tuple[Tensor, Tensor] | None:
    """Two fixed augmented views of up to ``n`` seeded images of ``dataset`` (``None`` with
    fewer than 2 readable ones); the global RNG is left as it was."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(dataset), min(n, len(dataset)), replace=False))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        batch = collate_views([dataset[int(i)] for i in rows])
    if batch["query"] is None or len(batch["query"]) < 2:
        return None
    return batch["query"], batch["key"]


@torch.no_grad()
def instance_top1(model: C2LModel, views: tuple[Tensor, Tensor], batch_size: int = 128) -> float:
    """Share of images whose own key is the nearest of all the images' keys to their query
    (both encoders in eval mode): the pretext task itself, apart from the queue and from
    batch statistics. Chance is 1 / number of images."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        q = torch.cat([model.encoder_q(x.to(device)) for x in views[0].split(batch_size)])
        k = torch.cat([model.encoder_k(x.to(device)) for x in views[1].split(batch_size)])
    finally:
        model.train(was_training)
    hits = (q @ k.T).argmax(dim=1) == torch.arange(len(q), device=device)
    return float(hits.float().mean())
