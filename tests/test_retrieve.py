"""Indexing a dataset with a model: batching of commits, resuming, unreadable files."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from cxrhash.config import make_config
from cxrhash.data.readers import open_dataset
from cxrhash.encode import encode_dataset
from cxrhash.index.store import HashIndex, IndexMismatchError
from cxrhash.retrieve import build_index, findings_text, search_images
from cxrhash.training.checkpoint import load_model
from cxrhash.training.trainer import train


@pytest.fixture(scope="module")
def checkpoint(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    train(make_config("test", data=f"phantom:{phantom_dir}", epochs=1), run, progress=False)
    return run / "best.pt"


def test_small_commits_and_workers_equal_one_commit(
    phantom_dir: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    ds = open_dataset(f"phantom:{phantom_dir}", 32)
    build_index(checkpoint, ds, tmp_path / "one", progress=False)
    report = build_index(
        checkpoint,
        ds,
        tmp_path / "many",
        commit_every=7,
        batch_size=5,
        num_workers=2,
        shard_size=16,
        backend="distinct",
    )
    assert "img/s" in capsys.readouterr().err  # the progress bar shows the indexing rate
    assert report.images_per_second > 0 and report.unreadable_summary() == ""
    a, b = HashIndex.open(tmp_path / "one"), HashIndex.open(tmp_path / "many")
    assert len(a) == len(b) == len(ds) and (a.n_shards, b.n_shards) == (1, 8)
    assert np.array_equal(np.asarray(a.codes), np.asarray(b.codes))
    assert np.array_equal(a.search_packed(a.codes[:9], 20)[0], b.search_packed(a.codes[:9], 20)[0])
    rows = list(b.iter_metadata())
    assert [r[1] for r in rows] == [b.stored_case_id(c) for c in ds.case_ids]
    assert rows[0][2] == findings_text(ds.labels[0], ds.pathologies)


def test_resume_adds_only_what_is_missing(phantom_dir: Path, checkpoint: Path, tmp_path: Path):
    ds = open_dataset(f"phantom:{phantom_dir}", 32)
    first = build_index(checkpoint, ds.subset(np.arange(50)), tmp_path / "idx", progress=False)
    assert first.added == 50
    second = build_index(checkpoint, ds, tmp_path / "idx", progress=False)
    assert (second.added, second.already_indexed, second.total) == (len(ds) - 50, 50, len(ds))


def test_unreadable_film_is_reported_and_not_indexed(
    phantom_dir: Path, checkpoint: Path, tmp_path: Path
):
    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    ds = open_dataset(f"phantom:{data}", 32)
    for bad in (3, 50):
        Path(str(ds.paths[bad])).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    report = build_index(checkpoint, ds, tmp_path / "idx", progress=False, num_workers=2)
    assert [s.case_id for s in report.skipped] == [ds.case_ids[3], ds.case_ids[50]]
    assert report.added == len(ds) - 2 and report.unreadable == 2
    assert report.unreadable_summary(limit=1) == f"2 unreadable: {ds.paths[3]}, … (1 more)"
    assert HashIndex.open(tmp_path / "idx").contains([ds.case_ids[3]]) == [False]
    again = build_index(checkpoint, ds, tmp_path / "idx", progress=False)
    assert (again.added, again.already_indexed, again.unreadable) == (0, len(ds) - 2, 2)


def test_float_store_keeps_each_films_outputs_and_reranks_queries(
    phantom_dir: Path, checkpoint: Path, tmp_path: Path
):
    ds = open_dataset(f"phantom:{phantom_dir}", 32)
    first = build_index(
        checkpoint, ds.subset(np.arange(40)), tmp_path / "idx", store_floats=True, progress=False
    )
    assert first.added == 40
    build_index(checkpoint, ds, tmp_path / "idx", commit_every=16, progress=False)  # resumed
    model, _ = load_model(checkpoint)
    enc = encode_dataset(model, ds.with_image_size(32, augment=False), progress=False)
    index = HashIndex.open(tmp_path / "idx")
    assert index.stores_floats and len(index) == len(ds)
    np.testing.assert_array_equal(index.codes, enc.codes)
    np.testing.assert_allclose(index.floats, enc.hashes, rtol=1e-3, atol=1e-4)  # float16

    paths = [Path(str(ds.paths[i])) for i in (0, 7)]
    for mode in ("floats", "asymmetric", "none"):
        found = search_images(paths, tmp_path / "idx", k=5, rerank=mode, shortlist=20)
        assert found[0].hits[0].case_id == index.stored_case_id(ds.case_ids[0])  # itself first
        assert (found[1].hits[0].score is None) == (mode == "none")
    with pytest.raises(IndexMismatchError, match="--store-floats"):
        build_index(checkpoint, ds, tmp_path / "idx", store_floats=False, progress=False)


def test_gradcam_heatmap_leaves_the_hits_alone(phantom_dir: Path, checkpoint: Path, tmp_path: Path):
    ds = open_dataset(f"phantom:{phantom_dir}", 32)
    build_index(checkpoint, ds.subset(np.arange(30)), tmp_path / "idx", progress=False)
    paths = [Path(str(ds.paths[i])) for i in (0, 3)]
    attention = search_images(paths, tmp_path / "idx", k=5)
    gradcam = search_images(paths, tmp_path / "idx", k=5, heatmap="gradcam")
    for a, g in zip(attention, gradcam, strict=True):
        assert [h.case_id for h in a.hits] == [h.case_id for h in g.hits]
        assert (a.heatmap, g.heatmap) == ("attention", "gradcam")
        assert g.attention is not None and (g.attention >= 0).all()
        assert g.attention.shape == a.attention.shape  # both on the stage-3 map
        assert a.predicted == g.predicted
    with pytest.raises(ValueError, match="heat-map must be one of"):
        search_images(paths, tmp_path / "idx", heatmap="lesions")


def test_any_decoding_failure_of_one_film_is_a_skip_with_its_reason(
    phantom_dir: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import cxrhash.data.dataset as dataset_mod

    ds = open_dataset(f"phantom:{phantom_dir}", 32)
    odd, huge = str(ds.paths[4]), str(ds.paths[60])
    real = dataset_mod.load_image

    def load(path):
        if str(path) == odd:
            raise ValueError("cannot reshape array of size 0")  # e.g. a resampler on a 0×N film
        if str(path) == huge:
            raise MemoryError()
        return real(path)

    monkeypatch.setattr(dataset_mod, "load_image", load)
    report = build_index(checkpoint, ds, tmp_path / "idx", progress=False, commit_every=16)
    assert [(s.case_id, s.reason) for s in report.skipped] == [
        (ds.case_ids[4], "cannot decode (ValueError: cannot reshape array of size 0)"),
        (ds.case_ids[60], "too large to decode in memory (MemoryError)"),
    ]
    assert report.added == len(ds) - 2
    assert HashIndex.open(tmp_path / "idx").contains([ds.case_ids[4], ds.case_ids[5]]) == [
        False,
        True,
    ]

    def interrupted(path):
        if str(path) == str(ds.paths[30]):
            raise KeyboardInterrupt  # not about the file: the job stops
        return real(path)

    monkeypatch.setattr(dataset_mod, "load_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_index(
            checkpoint, ds, tmp_path / "other", progress=False, batch_size=8, commit_every=16
        )
    assert len(HashIndex.open(tmp_path / "other")) == 16  # the batches committed before stay


def test_a_bad_query_is_reported_and_the_others_are_answered(
    phantom_dir: Path, checkpoint: Path, tmp_path: Path
):
    ds = open_dataset(f"phantom:{phantom_dir}", 32)
    build_index(
        checkpoint,
        ds.subset(np.arange(30)),
        tmp_path / "idx",
        progress=False,
        keep_source_names=True,
    )
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    paths = [Path(str(ds.paths[0])), tmp_path / "missing.png", broken, Path(str(ds.paths[7]))]
    found = search_images(paths, tmp_path / "idx", k=5)
    assert [r.path for r in found] == [str(p) for p in paths]
    assert [r.error for r in found[:2]] == [None, "file not found"]
    assert found[2].error is not None and found[2].error.startswith("truncated or corrupt")
    assert found[3].error is None
    assert [found[0].hits[0].case_id, found[3].hits[0].case_id] == [ds.case_ids[0], ds.case_ids[7]]
    assert found[1].hits == [] and found[1].image is None and found[1].predicted == {}
    assert found[0].predicted and found[0].attention is not None
    alone = search_images(paths[3:], tmp_path / "idx", k=5)[0]
    assert [h.case_id for h in alone.hits] == [h.case_id for h in found[3].hits]
    assert all(r.error for r in search_images(paths[1:3], tmp_path / "idx", k=5))
