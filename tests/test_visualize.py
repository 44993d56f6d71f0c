"""The retrieval figure: heat-map scaling and a figure that says what the heat-map is."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrhash.index.store import SearchHit
from cxrhash.retrieve import QueryResult
from cxrhash.visualize import HEATMAP_NOTES, NOT_A_DETECTOR, attention_overlay, plot_retrieval


def test_overlay_is_upsampled_and_scaled_to_unit_range() -> None:
    att = np.array([[-0.5, 0.0], [0.25, 0.5]], dtype=np.float32)
    up = attention_overlay(att, 8)
    assert up.shape == (8, 8)
    assert up.min() == pytest.approx(0.0) and up.max() == pytest.approx(1.0)
    assert up[0, 0] < up[-1, -1]  # the low corner stays low
    assert not attention_overlay(np.full((3, 3), 0.7), 6).any()  # a flat map shows nothing


def test_figure_has_one_row_per_query_and_names_the_heatmap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts: list[str] = []
    import matplotlib.figure

    original = matplotlib.figure.Figure.text

    def spy(self, x, y, s, *args, **kwargs):  # type: ignore[no-untyped-def]
        texts.append(s)
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "text", spy)
    rng = np.random.default_rng(0)
    hits = [SearchHit(i, i, f"c{i}", i, "Mass", "hit.png") for i in range(3)]
    results = [
        QueryResult("q1.png", hits, rng.random((32, 32)), rng.random((4, 4)), {}),
        QueryResult("q2.png", hits, rng.random((32, 32)), None, {}),
    ]
    out = plot_retrieval(results, tmp_path / "fig.png", lambda p: rng.random((32, 32)), top=3)
    with Image.open(out) as im:
        w, h = im.size
    assert h > w * 0.3 and w > h  # two rows of five panels
    note = HEATMAP_NOTES["attention"] + NOT_A_DETECTOR
    assert note in texts and "not a lesion detector" in note
