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


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures ``savefig`` wrote during the test (open for inspection afterwards)."""
    import matplotlib.figure

    figures: list = []
    original = matplotlib.figure.Figure.savefig

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    return figures


def _result(
    path: str,
    hits: list[SearchHit],
    *,
    readable: bool = True,
    attention: bool = True,
    heatmap: str = "attention",
) -> QueryResult:
    """A query's result: a grey film with a heat-map, or an unreadable file (``error`` set)."""
    if not readable:
        return QueryResult(path, [], None, None, {}, heatmap, "not an image")
    heat = np.eye(4) if attention else None
    return QueryResult(path, hits, np.full((16, 16), 0.5), heat, {}, heatmap)


def test_unread_queries_are_left_out_with_their_findings(
    tmp_path: Path, saved_figures: list
) -> None:
    hits = [SearchHit(i, 10 + i, f"c{i}", i, "Mass|Nodule", f"h{i}.png") for i in range(4)]
    results = [
        _result("a.png", hits),
        _result("bad.png", [], readable=False),
        _result("c.png", hits[:1], attention=False),
    ]
    loaded: list[str] = []

    def load(path: str) -> np.ndarray | None:
        loaded.append(path)
        return None if path == "h1.png" else np.zeros((16, 16))

    plot_retrieval(results, tmp_path / "f.png", load, top=2, query_findings=["A", "B", "C"])
    (fig,) = saved_figures
    axes = np.array(fig.axes).reshape(2, 4)  # two readable queries, query + heat-map + top 2
    assert [ax.get_title() for ax in axes[:, 0]] == ["query\nA", "query\nC"]
    assert axes[0, 1].get_title().endswith("(not a lesion finder)")
    assert len(axes[0, 1].get_images()) == 2  # the film and its heat-map over it
    assert axes[1, 1].get_title() == "(no attention:\nglobal-only)"
    assert [ax.get_title() for ax in axes[0, 2:]] == ["#1 d=0\nMass|Nodule", "#2 d=1\nMass|Nodule"]
    assert loaded == ["h0.png", "h1.png", "h0.png"]  # the top 2 of each query only
    assert len(axes[0, 2].get_images()) == 1 and not axes[0, 3].get_images()  # h1 is gone
    assert axes[1, 3].get_title() == "" and not axes[1, 3].get_images()  # no second hit


def test_gradcam_figures_say_so_and_nothing_readable_is_an_error(
    tmp_path: Path, saved_figures: list
) -> None:
    hit = SearchHit(0, 0, "c0", 3, "No Finding", None)
    result = _result("q.png", [hit], heatmap="gradcam")
    plot_retrieval([result], tmp_path / "g.png", lambda p: pytest.fail("no path to load"), top=1)
    (fig,) = saved_figures
    assert "Grad-CAM" in fig.axes[1].get_title()
    assert HEATMAP_NOTES["gradcam"] + NOT_A_DETECTOR in [t.get_text() for t in fig.texts]
    unread = _result("x.png", [], readable=False)
    with pytest.raises(ValueError, match="no query image could be read"):
        plot_retrieval([unread], tmp_path / "h.png", lambda p: None)
    assert not (tmp_path / "h.png").exists()


def test_long_findings_are_wrapped_into_two_lines_at_most() -> None:
    from cxrhash.visualize import _short

    assert _short("Mass") == "Mass"
    many = "Atelectasis|Cardiomegaly|Effusion|Infiltration|Mass|Nodule|Pneumonia"
    assert _short(many) == "Atelectasis|Cardiomegaly\nEffusion|Infiltration|Mass"
    assert _short("Pleural_Thickening_and_more_than_28") == "Pleural_Thickening_and_more_than_28"


def test_write_retrieval_figure_shows_moved_archive_files_as_empty_panels(
    tmp_path: Path, saved_figures: list
) -> None:
    from cxrhash.visualize import write_retrieval_figure

    film = tmp_path / "here.png"
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(film)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    hits = [
        SearchHit(i, i, f"c{i}", i, "Mass", str(tmp_path / name))
        for i, name in enumerate(["here.png", "moved.png", "broken.png"])
    ]
    out = write_retrieval_figure([_result("q.png", hits)], tmp_path / "out" / "fig.png")
    assert out.is_file()
    (fig,) = saved_figures
    drawn = [len(ax.get_images()) for ax in fig.axes[2:5]]
    assert drawn == [1, 0, 0]
