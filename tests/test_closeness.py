"""Honest similarity (issue #13 item 2): the calibration file, read as hostile input, and
the "no close match in this archive" assessment on a tiny model over phantom films."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cxrhash.cli import app as cli_app
from cxrhash.config import make_config
from cxrhash.data.images import load_resized
from cxrhash.data.readers import open_dataset
from cxrhash.index.calibration import (
    CALIBRATION_NAME,
    MIN_SAMPLE,
    QUANTILE,
    Calibration,
    CalibrationSample,
    load_calibration,
    merge_samples,
    read_calibration,
    read_sample,
    save_sample,
)
from cxrhash.index.store import HashIndex
from cxrhash.methods import METHODS
from cxrhash.models.feature_stats import PIXEL_DIM, captured_map_statistics, pixel_statistics
from cxrhash.retrieve import build_index, search_decoded
from cxrhash.serve import create_app
from cxrhash.training.checkpoint import load_model
from cxrhash.training.trainer import train

HELD_OUT = 24


def sample(n: int = 50, dim: int = 8, bits: int = 16, seed: int = 0) -> CalibrationSample:
    rng = np.random.default_rng(seed)
    stats = rng.standard_normal((n, dim)).astype(np.float32)
    hashes = rng.standard_normal((n, bits)).astype(np.float32)
    pixels = rng.standard_normal((n, 4)).astype(np.float32)
    return CalibrationSample("m1", stats, hashes, represented=n, pixels=pixels)


# ------------------------------------------------------------------ the file, hostile


def test_round_trip_and_limits(tmp_path: Path) -> None:
    s = sample()
    save_sample(tmp_path, s)
    back = read_sample(tmp_path, "m1", 16)
    assert back is not None and back.represented == 50
    np.testing.assert_array_equal(back.stats, s.stats)
    np.testing.assert_array_equal(back.hashes, s.hashes)
    np.testing.assert_array_equal(back.pixels, s.pixels)
    assert not (tmp_path / (CALIBRATION_NAME + ".tmp")).exists()
    cal = load_calibration(tmp_path, "m1", 16)
    assert cal is not None and cal.stats_dim == 8 and cal.pixels_dim == 4
    # a Gaussian sample's own films: about 1 % above the limits, far points above them
    rng = np.random.default_rng(1)
    inside = cal.assess(
        rng.standard_normal((200, 8)), rng.standard_normal((200, 4)), rng.standard_normal((200, 16))
    )
    assert np.mean([c.close for c in inside]) > 0.9
    far_maps = cal.assess(
        rng.standard_normal((20, 8)) + 10,
        rng.standard_normal((20, 4)),
        rng.standard_normal((20, 16)),
    )
    far_pixels = cal.assess(
        rng.standard_normal((20, 8)),
        rng.standard_normal((20, 4)) + 10,
        rng.standard_normal((20, 16)),
    )
    # either criterion alone says "no close match"
    assert not any(c.close for c in far_maps + far_pixels)
    assert all(c.mahalanobis <= c.mahalanobis_limit for c in far_pixels[:5])
    assert all(c.pixel_distance > c.pixel_limit for c in far_pixels)
    assert far_maps[0].message.startswith("no close match in this archive: ")
    assert f"within {cal.mahalanobis_limit:.1f} ({QUANTILE:g}th percentile)" in far_maps[0].message
    assert f"pixel statistics at {far_pixels[0].pixel_distance:.1f}" in far_pixels[0].message
    assert inside[0].as_dict()["message"] == inside[0].message


def _write_npz(path: Path, **arrays: object) -> None:
    with open(path / CALIBRATION_NAME, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


GOOD = Calibration.fit(sample()).arrays()


def _good(**over: object) -> dict[str, object]:
    return {**GOOD, **over}


def test_the_good_arrays_load(tmp_path: Path) -> None:
    _write_npz(tmp_path, **_good())
    back = read_calibration(tmp_path, "m1", 16)
    assert back is not None and back.mahalanobis_limit == GOOD["limits"][0]


@pytest.mark.parametrize(
    "arrays",
    [
        _good(model_id=np.str_("other-model")),
        _good(format=np.int64(99)),
        _good(stats=GOOD["stats"].astype(np.float64)),
        _good(pixels=GOOD["pixels"].astype(np.float64)),
        _good(pixels=np.zeros((49, 4), np.float32)),  # not one row per film
        _good(pixels=np.full((50, 4), np.inf, np.float32)),
        _good(pixel_precisions=np.zeros((5, 4, 5))),
        _good(pixel_means=np.zeros((5, 3))),  # another width than the pixels
        _good(limits=np.array([1.0, 2.0, 3.0])),  # format 1 had three
        _good(hashes=np.zeros((50, 32), np.float32)),  # another code length
        _good(stats=np.full((50, 8), np.nan, np.float32)),
        _good(stats=np.zeros((5, 8), np.float32), hashes=np.zeros((5, 16), np.float32)),
        _good(represented=np.int64(3)),
        _good(extra=np.zeros(3)),
        _good(stats=np.array([{"a": 1}], dtype=object)),  # a pickle: never loaded
        _good(precisions=np.full((5, 8, 8), np.inf, np.float32)),
        _good(means=np.zeros((4, 8))),  # not one per fold
        _good(precisions=np.zeros((5, 8, 9), np.float32)),
        _good(limits=np.array([1.0, 2.0, 3.0, 4.0, 5.0])),
        _good(limits=np.array(["a", "b", "c"])),
        _good(quantile=np.float64(250)),
        _good(means=np.zeros((5, 8), np.int64)),
    ],
    ids=[
        "model",
        "format",
        "dtype",
        "pixel-dtype",
        "pixel-rows",
        "pixel-inf",
        "pixel-precision-shape",
        "pixel-width",
        "three-limits",
        "bits",
        "nan",
        "too-few",
        "represented",
        "keys",
        "pickle",
        "inf-precision",
        "folds",
        "precision-shape",
        "limits",
        "limits-text",
        "quantile",
        "int-means",
    ],  # fmt: skip
)
def test_a_bad_file_means_not_calibrated(tmp_path: Path, arrays: dict[str, object]) -> None:
    _write_npz(tmp_path, **arrays)
    assert read_sample(tmp_path, "m1", 16) is None
    assert load_calibration(tmp_path, "m1", 16) is None


def test_a_file_of_format_1_asks_for_recalibration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = {k: v for k, v in GOOD.items() if not k.startswith("pixel")}
    _write_npz(tmp_path, **{**old, "format": np.int64(1), "limits": GOOD["limits"][[0, 2, 3]]})
    with caplog.at_level(logging.WARNING, logger="cxrhash.index.calibration"):
        assert read_calibration(tmp_path, "m1", 16) is None
    assert "older cxrhash" in caplog.text and "cxrhash index --calibrate" in caplog.text


def test_garbage_truncation_and_zip_bomb_are_not_calibrated(tmp_path: Path) -> None:
    assert load_calibration(tmp_path, "m1", 16) is None  # missing
    target = tmp_path / CALIBRATION_NAME
    target.write_bytes(b"\x00not a zip" * 100)
    assert load_calibration(tmp_path, "m1", 16) is None
    save_sample(tmp_path, sample())
    whole = target.read_bytes()
    target.write_bytes(whole[: len(whole) // 2])
    assert load_calibration(tmp_path, "m1", 16) is None
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("stats.npy", b"\x00" * (300 << 20))  # 300 MiB of zeros, compressed
    assert target.stat().st_size < 2 << 20
    assert read_sample(tmp_path, "m1", 16) is None


def test_merge_keeps_a_bounded_sample_weighted_by_what_it_stands_for() -> None:
    old = sample(n=40, seed=1)
    old = CalibrationSample("m1", old.stats + 100, old.hashes, 4000, old.pixels)
    new = sample(n=40, seed=2)  # stands for 40 films: a hundredth of the weight of the old
    merged = merge_samples(old, new, cap=40)
    assert len(merged) == 40 and merged.represented == 4040
    from_old = int(np.sum(merged.stats[:, 0] > 50))
    assert from_old >= 36  # ≈ 99 % of the draws
    assert merged.pixels.shape == (40, 4)
    np.testing.assert_array_equal(  # the rows kept stay together
        merged.pixels[merged.stats[:, 0] <= 50],
        new.pixels[np.isin(new.stats[:, 0], merged.stats[:, 0])],
    )
    other = CalibrationSample("m2", new.stats, new.hashes, 40, new.pixels)
    assert merge_samples(old, other).represented == 40  # another model's sample is dropped


def test_calibration_needs_enough_films() -> None:
    with pytest.raises(ValueError):
        from cxrhash.index.calibration import check_sample

        check_sample(sample(n=MIN_SAMPLE - 1), "m1", 16)
    assert Calibration.fit(sample(n=MIN_SAMPLE)).mahalanobis_limit > 0


# ------------------------------------------------------------------ a tiny model


@pytest.fixture(scope="module")
def built(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model trained on the phantom films, and an index of all but the last
    ``HELD_OUT`` films (those are the in-distribution queries)."""
    base = tmp_path_factory.mktemp("closeness")
    config = make_config("test", data=f"phantom:{phantom_dir}", epochs=1)
    train(config, base / "run", progress=False)
    ds = open_dataset(f"phantom:{phantom_dir}", 32)
    build_index(
        base / "run" / "best.pt", ds.subset(np.arange(len(ds) - HELD_OUT)), base / "idx",
        progress=False, keep_source_names=True,
    )  # fmt: skip
    return {"run": base / "run", "index": base / "idx", "data": phantom_dir}


def _closeness(built: dict[str, Path], films: list[np.ndarray], index: Path | None = None):
    model, _ = load_model(built["run"] / "best.pt")
    with HashIndex.open(index or built["index"]) as ix:
        return search_decoded(model, ix, films, k=3)


def test_fires_on_noise_not_on_held_out_films(built: dict[str, Path]) -> None:
    assert (built["index"] / CALIBRATION_NAME).is_file()
    kept = read_sample(built["index"], load_model(built["run"] / "best.pt")[1]["model_id"], 16)
    assert kept is not None and len(kept) == kept.represented == 120 - HELD_OUT
    paths = sorted((built["data"] / "images").glob("*.png"))[-HELD_OUT:]
    held = _closeness(built, [load_resized(p, 32) for p in paths])
    rng = np.random.default_rng(0)
    noise = _closeness(built, [rng.random((32, 32), dtype=np.float32) for _ in range(12)])
    blanks = _closeness(built, [np.full((32, 32), v, np.float32) for v in (0.0, 0.5, 1.0)])
    assert all(c is not None for c in held.closeness + noise.closeness)
    held_fires = sum(not c.close for c in held.closeness if c is not None)
    assert held_fires <= 2, [c.message for c in held.closeness if c is not None]
    assert all(c is not None and not c.close for c in noise.closeness + blanks.closeness)
    assert all(len(h) == 3 for h in noise.hits)  # the hits are still there, marked as far


@pytest.mark.realdata
def test_fires_on_real_films_against_a_phantom_index(built: dict[str, Path], cxr_dev: Path) -> None:
    real = cxr_dev / "images"
    films = [load_resized(p, 32) for p in sorted(real.glob("*.png"))[:20]]
    found = _closeness(built, films)
    fired = sum(c is not None and not c.close for c in found.closeness)
    assert fired >= 18, [c.message for c in found.closeness if c is not None]


def test_an_index_without_calibration_still_searches(
    built: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "idx"
    shutil.copytree(built["index"], copy)
    (copy / CALIBRATION_NAME).unlink()
    film = load_resized(sorted((built["data"] / "images").glob("*.png"))[3], 32)
    found = _closeness(built, [film], copy)
    assert found.closeness == [None] and len(found.hits[0]) == 3
    assert found.hits[0][0].distance == 0
    (copy / CALIBRATION_NAME).write_bytes(b"garbage")
    assert _closeness(built, [film], copy).closeness == [None]
    with TestClient(create_app(copy)) as client:
        res = client.post("/api/search", files={"image": ("f.png", b"", "image/png")})
        assert res.status_code == 422  # the server still runs its checks
        png = (sorted((built["data"] / "images").glob("*.png"))[3]).read_bytes()
        body = client.post("/api/search", files={"image": ("f.png", png, "image/png")}).json()
        assert body["closeness"] is None and len(body["hits"]) == 10
    # re-calibrating from the films it holds makes it assess again
    res = CliRunner().invoke(
        cli_app,
        ["index", "--calibrate", "--checkpoint", str(built["run"] / "best.pt"),
         "--data", f"phantom:{built['data']}", "--out", str(copy)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "calibrated" in res.output
    again = _closeness(built, [film], copy).closeness[0]
    assert again is not None and again.close


def test_api_and_cli_answer_the_closeness(built: dict[str, Path]) -> None:
    film = sorted((built["data"] / "images").glob("*.png"))[5]
    with TestClient(create_app(built["index"])) as client:
        body = client.post(
            "/api/search", files={"image": ("f.png", film.read_bytes(), "image/png")}
        ).json()
    c = body["closeness"]
    assert c["close"] is True and c["mahalanobis"] <= c["mahalanobis_limit"]
    assert c["message"].startswith("close match in this archive") and c["sample_size"] == 96
    res = CliRunner().invoke(
        cli_app, ["search", str(film), "--index", str(built["index"]), "--json", "-k", "2"]
    )
    assert res.exit_code == 0, res.output
    entry = json.loads(res.output)[0]
    assert entry["closeness"]["close"] is True
    assert entry["closeness"]["mahalanobis"] == pytest.approx(c["mahalanobis"], rel=1e-4)
    res = CliRunner().invoke(cli_app, ["search", str(film), "--index", str(built["index"])])
    assert "close match in this archive" in res.output


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_method_gives_one_row_of_map_statistics_per_film(method: str) -> None:
    model = METHODS.get(method).build_model(make_config("test", method=method), 3).eval()
    x = torch.rand(5, 1, 32, 32)
    with torch.no_grad(), captured_map_statistics(model) as captured:
        model(x)
        model(x[:2])
    assert [len(c.maps) for c in captured] == [5, 2]  # one forward, one entry of B rows
    assert [len(c.pixels) for c in captured] == [5, 2]
    maps = captured[0].maps
    assert maps.shape[1] % 2 == 0 and torch.isfinite(maps).all()
    assert captured[0].pixels.shape[1] == PIXEL_DIM
    # rows are per film: the statistics of film 1 do not depend on the rest of the batch
    torch.testing.assert_close(maps[:2], captured[1].maps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(captured[0].pixels[:2], captured[1].pixels)
    assert maps[0].tolist() != maps[1].tolist()
    # the pixels are the model's input: the same for every method
    torch.testing.assert_close(captured[0].pixels, pixel_statistics(x))


def test_pixel_statistics_tell_a_blank_noise_and_edges_apart() -> None:
    size = 64
    blank = torch.full((1, 1, size, size), 0.3)
    noise = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    half = torch.zeros(1, 1, size, size)
    half[..., size // 2 :] = 1.0  # one vertical edge
    stats = pixel_statistics(torch.cat([blank, noise, half]))
    assert stats.shape == (3, PIXEL_DIM) and torch.isfinite(stats).all()
    hist = stats[:, :16] ** 2  # square roots of the bin shares
    torch.testing.assert_close(hist.sum(1), torch.ones(3))
    assert hist[0, int(0.3 * 16)] == 1.0  # a blank fills one bin
    assert torch.all(hist[1] > 0.03)  # uniform noise fills them all
    torch.testing.assert_close(hist[2, [0, 15]], torch.tensor([0.5, 0.5]))
    grad_median = stats[:, 16 + 2]  # the median gradient magnitude
    assert grad_median[0] == grad_median[2] < grad_median[1]  # only the noise has edges everywhere
    # larger films are area-averaged first: the figures do not depend on the input size
    big = torch.nn.functional.interpolate(noise, scale_factor=4, mode="nearest")
    torch.testing.assert_close(pixel_statistics(big), stats[1:2])
