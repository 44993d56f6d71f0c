"""Does a C2L checkpoint tell images apart? Similarities of its queries to their own keys,
to other images' keys and to the queue.

For 256 seeded images of the folder, two augmented views each: q = query encoder (view 1),
k = key encoder (view 2), in train mode (one batch-norm batch, as the loss sees them) and
in eval mode. Prints the mean cosine of q to its own key (pos) and to the other keys (neg),
the share whose own key is nearest (top-1; chance 1/256) and its median rank, the mean
cosine between different queries (near 1 = every film maps to one point), and the mean
cosine of q to the queue. ``--init`` scores the same architecture at initialisation.

    python benchmarks/c2l_diagnose.py RUN/last.pt --data ../shared/data/cxr-unlabeled
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cxrhash.pretrain.c2l import C2LConfig, C2LModel, grouped_forward
from cxrhash.pretrain.unlabeled import UnlabeledImages, collate_views


def diagnose(model: C2LModel, views: tuple[torch.Tensor, torch.Tensor], groups: int) -> str:
    """One line of figures for ``model`` on the view pairs, in its current mode."""
    with torch.no_grad():
        q = grouped_forward(model.encoder_q, views[0], groups)
        order = torch.randperm(len(q)) if groups > 1 else None
        k = grouped_forward(model.encoder_k, views[1], groups, order)
    sims = q @ k.T
    off = ~torch.eye(len(q), dtype=torch.bool)
    pos, neg = sims.diag(), sims[off]
    rank = (sims > pos[:, None]).sum(dim=1).float()
    qq = (q @ q.T)[off]
    return (
        f"pos {pos.mean():.3f} ± {pos.std():.3f}, neg {neg.mean():.3f} ± {neg.std():.3f}, "
        f"top-1 {(rank == 0).float().mean():.3f}, median rank {rank.median():.0f}/{len(q) - 1}, "
        f"query·query {qq.mean():.3f}, query·queue {(q @ model.queue.T).mean():.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, load the checkpoint (weights only), print both modes."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="a C2L run's last.pt")
    ap.add_argument("--data", type=Path, required=True, help="the unlabelled folder")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--init", action="store_true", help="score the untrained architecture")
    args = ap.parse_args(argv)
    saved = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    config = C2LConfig.from_dict(saved["config"])
    model = C2LModel(config.backbone, config.dim, config.queue)
    if not args.init:
        model.load_state_dict(saved["model"])
    torch.manual_seed(0)
    data = UnlabeledImages(
        args.data,
        config.image_size,
        max_images=args.images,
        seed=1,
        augment_strength=config.augment_strength,
    )
    batch = collate_views([data[i] for i in range(len(data))])
    views = (batch["query"], batch["key"])
    for mode in ("train", "eval"):
        model.train(mode == "train")
        groups = config.bn_groups if mode == "train" else 1
        print(f"{'init ' if args.init else ''}{mode}: {diagnose(model, views, groups)}")


if __name__ == "__main__":
    main()
