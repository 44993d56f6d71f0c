"""Figures a person would rather look at than read: retrieval results with heat-maps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cxrhash.models.heatmaps import HEATMAP_TITLES
from cxrhash.retrieve import QueryResult

HEATMAP_NOTES = {
    "attention": "Heat-map: the network's spatial attention (where it weighted the image's "
    "features for the code), scaled min-max per image.",
    "gradcam": "Heat-map: Grad-CAM of the findings the network predicts (where the evidence "
    "for them lies in its feature map), scaled min-max per image.",
}
NOT_A_DETECTOR = (
    " It is not a lesion detector: how often its peak falls on a lesion is measured in "
    "docs/benchmarks-notes.md (pointing game)."
)


def attention_overlay(attention: np.ndarray, size: int) -> np.ndarray:
    """Upsample an attention map (h×w, values in (−1, 1)) to ``size``×``size`` in [0, 1]."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.asarray(attention, np.float32))[None, None]
    up = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    lo, hi = float(up.min()), float(up.max())
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


def plot_retrieval(
    results: list[QueryResult],
    out_path: Path,
    load_hit_image: Callable[[str], np.ndarray | None],
    *,
    top: int = 5,
    query_findings: list[str] | None = None,
) -> Path:
    """One row per query: the query, its heat-map (attention or Grad-CAM), then the top hits.

    Queries that could not be read (``error`` set) are left out.

    Args:
        results: output of :func:`cxrhash.retrieve.search_images`.
        out_path: PNG to write.
        load_hit_image: maps a hit's source path to a grey image (or ``None`` if gone).
        top: how many hits to show per query.
        query_findings: optional ground-truth findings of each query, for the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = [i for i, res in enumerate(results) if res.image is not None]
    if not keep:
        raise ValueError("no query image could be read: nothing to plot")
    results = [results[i] for i in keep]
    if query_findings is not None:
        query_findings = [query_findings[i] for i in keep]
    n_rows, n_cols = len(results), top + 2
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.1 * n_cols, 2.4 * n_rows), squeeze=False)
    for r, res in enumerate(results):
        image = res.image
        assert image is not None  # kept above
        ax = axes[r, 0]
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        title = "query"
        if query_findings is not None:
            title += "\n" + _short(query_findings[r])
        ax.set_title(title, fontsize=7)
        ax = axes[r, 1]
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        if res.attention is not None:
            ax.imshow(attention_overlay(res.attention, image.shape[0]), cmap="jet", alpha=0.45)
            title = HEATMAP_TITLES[res.heatmap].replace(" of ", "\nof ", 1)
            ax.set_title(f"{title}\n(not a lesion finder)", fontsize=7)
        else:
            ax.set_title("(no attention:\nglobal-only)", fontsize=7)
        for c, hit in enumerate(res.hits[:top]):
            ax = axes[r, c + 2]
            img = load_hit_image(hit.source_path) if hit.source_path else None
            if img is not None:
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"#{hit.rank + 1} d={hit.distance}\n{_short(hit.findings)}", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout(rect=(0, 0.06 / n_rows, 1, 1))
    kinds = dict.fromkeys(res.heatmap for res in results if res.attention is not None)
    note = " ".join(HEATMAP_NOTES[k] for k in kinds) + NOT_A_DETECTOR if kinds else ""
    fig.text(0.01, 0.005, note, fontsize=6, wrap=True, va="bottom")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def _short(findings: str, width: int = 28) -> str:
    """Findings string wrapped to fit under a thumbnail."""
    parts, lines, cur = findings.split("|"), [], ""
    for p in parts:
        nxt = f"{cur}|{p}" if cur else p
        if len(nxt) > width and cur:
            lines.append(cur)
            cur = p
        else:
            cur = nxt
    lines.append(cur)
    return "\n".join(lines[:2])


def write_retrieval_figure(
    results: list[QueryResult], path: Path, query_findings: list[str] | None = None
) -> Path:
    """:func:`plot_retrieval` with hit images read from their indexed source paths."""
    from cxrhash.data.images import ImageReadError, load_image

    def load(source: str) -> np.ndarray | None:
        try:
            return load_image(source)
        except (ImageReadError, OSError):
            return None  # the archive file moved or vanished: show an empty panel

    return plot_retrieval(results, path, load, query_findings=query_findings)
