"""Smoke tests: every script of benchmarks/ run end to end at a tiny size.

Each script's ``main`` is called in-process with arguments that make it tiny and send
every output into ``tmp_path`` (never into docs/, runs/ or benchmarks/progress/ of the
repo); the test checks the tables and figures it wrote. ``results.py`` trains and
evaluates one run through the CLI (subprocesses); ``pointing.py``, ``codes_vs_lsh.py``
and ``recipes.py`` reuse that run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
PROGRESS = BENCHMARKS / "progress" / "phantom-cpu128"

Load = Callable[[str], ModuleType]


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Load:
    """Import a script of benchmarks/ afresh (they import each other by bare name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def _load(name: str) -> ModuleType:
        sys.modules.pop(name, None)
        return __import__(name)

    return _load


def _rows(markdown: str, first: str) -> list[list[str]]:
    """The cells of every table row of ``markdown`` whose first cell is ``first``."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("|")
    ]
    return [r for r in rows if r[0] == first]


def _unit(text: str) -> float:
    """The leading number of a table cell (``0.412 ± 0.01`` → 0.412)."""
    value = float(text.split()[0])
    assert 0.0 <= value <= 1.0, text
    return value


def test_every_script_has_a_smoke_test() -> None:
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    tested = {
        name.removeprefix("test_").removesuffix("_runs_tiny")
        for name in globals()
        if name.startswith("test_") and name.endswith("_runs_tiny")
    }
    assert scripts == tested


# ---------------------------------------------------------------- one trained run


@pytest.fixture(scope="module")
def results_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``results.py`` on 100 phantom films: one run (test profile, 16 bits, seed 0, 1 epoch)
    trained and evaluated through the CLI, and its page ``results.md``."""
    out = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))
        sys.modules.pop("results", None)
        import results

        results.main(
            [
                "--profile", "test", "--epochs", "1", "--bits", "16", "--seeds", "0",
                "--phantom-n", "100", "--runs", str(out / "runs"),
                "--out", str(out / "results.md"), "--shared-data", str(out / "no-real-data"),
            ]
        )  # fmt: skip
    return out


@pytest.mark.slow
def test_results_runs_tiny(results_run: Path) -> None:
    page = (results_run / "results.md").read_text()
    assert page.startswith("# Results: attention-fusion")
    assert "## phantom (100 films, 128 px source)" in page and "cxr-dev" not in page
    for protocol in ("Literature", "Strict"):
        assert f"### {protocol} protocol" in page
    codes = _rows(page, "16")
    hash_rows = [r for r in codes if r[1] == "hash codes"]
    assert len(hash_rows) == 2  # literature and strict
    assert all(_unit(r[2]) > 0 for r in hash_rows)  # mAP
    pointing = [r for r in codes if len(r) == 6 and r[1] == "0"]  # bits, seed, hits, chance
    assert len(pointing) == 1 and 0 < _unit(pointing[0][3]) < 1  # chance: a share of the film
    run = results_run / "runs" / "phantom-16b-s0"
    assert (run / "best.pt").is_file() and (run / "eval.json").is_file()


@pytest.mark.slow
def test_pointing_runs_tiny(
    load: Load, results_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = results_run / "runs" / "phantom-16b-s0"
    data = results_run / "runs" / "phantom-data"
    out = tmp_path / "pointing.md"
    load("pointing").main(
        [str(run), "--data", str(data), "--heatmap", "gradcam", "--out", str(out)]
    )
    table = out.read_text()
    assert table.strip() == capsys.readouterr().out.strip()
    (row,) = _rows(table, "any finding")
    hit, chance, films = _unit(row[1]), _unit(row[2]), int(row[3])
    assert films > 0 and 0 < chance < 1 and 0 <= hit <= 1
    assert (run / "pointing-gradcam.json").is_file()


@pytest.mark.slow
def test_codes_vs_lsh_runs_tiny(
    load: Load, results_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = results_run / "runs" / "phantom-16b-s0"
    load("codes_vs_lsh").main([str(run)])
    (row,) = _rows(capsys.readouterr().out, run.name)
    codes, lsh = _unit(row[1]), _unit(row[2])
    assert float(row[3].split(" ± ")[0]) == pytest.approx(codes - lsh, abs=2e-4)


@pytest.mark.slow
def test_recipes_runs_tiny(load: Load, results_run: Path, tmp_path: Path) -> None:
    """One variant × one seed; its run is the finished one of results.py (same profile, bits,
    seed and epochs), so recipes.py skips training, as a re-run does, and writes the section."""
    runs, out = tmp_path / "runs", tmp_path / "recipes.md"
    shutil.copytree(results_run / "runs" / "phantom-16b-s0", runs / "tiny-recipe" / "base-16b-s0")
    data = f"phantom:{results_run / 'runs' / 'phantom-data'}"
    load("recipes").main(
        [
            "--title", "Tiny recipe", "--variant", "base=", "--data", data, "--profile", "test",
            "--bits", "16", "--epochs", "1", "--seeds", "0", "--runs", str(runs),
            "--out", str(out),
        ]
    )  # fmt: skip
    page = out.read_text()
    assert page.startswith("# Recipe measurements") and "## Tiny recipe" in page
    (row,) = _rows(page, "base")
    assert _unit(row[1]) > 0 and _unit(row[3]) > 0  # codes and float mAP
    summary = json.loads((runs / "tiny-recipe" / "summary.json").read_text())
    assert list(summary) == ["base"]


# ---------------------------------------------------------------- scripts on their own


def test_codes_summary_runs_tiny(load: Load, capsys: pytest.CaptureFixture[str]) -> None:
    load("codes_summary").main([str(PROGRESS)])  # read-only: the committed bench progress
    text = capsys.readouterr().out
    for bits in ("64", "32"):
        methods = [r[1] for r in _rows(text, bits)]
        assert methods == ["attention-fusion", "hashnet"]
    assert "attention-fusion − hashnet at 64 bits, paired by seed:" in text


def test_bench_all_runs_tiny(load: Load, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--doc-only`` from a finished report, then ``--save-progress``, in a tmp tree."""
    from cxrhash.bench.report import write_report

    bench_all = load("bench_all")
    for name, path in {"RUNS": "runs", "DOCS": "docs", "PROGRESS": "progress"}.items():
        monkeypatch.setattr(bench_all, name, tmp_path / path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks-notes.md").write_text("# Benchmarks\n\nThe notes.\n")
    run = tmp_path / "runs" / "phantom-cpu128"
    shutil.copytree(PROGRESS, run)
    cells = [json.loads(p.read_text()) for p in sorted((run / "cells").glob("*-64b-*.json"))]
    write_report(cells, run / "report", title="cxrhash bench: tiny", command="cxrhash bench")

    bench_all.main(["--doc-only"])
    doc = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert doc.startswith("# Benchmarks\n\nThe notes.\n")
    assert "## Bench: phantom-cpu128\n\n## cxrhash bench: tiny" in doc  # headings demoted
    figures = re.findall(r"\]\((benchmarks/phantom-cpu128/[^)]+\.png)\)", doc)
    assert "benchmarks/phantom-cpu128/map_vs_bits.png" in figures
    for figure in figures:
        with Image.open(tmp_path / "docs" / figure) as img:
            assert img.format == "PNG"
    assert "## Benches not run yet" in doc and "phantom-12-epochs" in doc

    bench_all.main(["--save-progress", "--only", "phantom-cpu128"])
    saved = tmp_path / "progress" / "phantom-cpu128"
    assert sorted(p.name for p in (saved / "cells").iterdir()) == sorted(
        p.name for p in (PROGRESS / "cells").iterdir()
    )


def test_c2l_diagnose_runs_tiny(
    load: Load, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cxrhash.pretrain import C2LConfig, pretrain_c2l

    config = C2LConfig(
        backbone="test-cnn", image_size=32, epochs=1, batch_size=8, queue=16, dim=8, max_images=16
    )
    pretrain_c2l(config, phantom_dir, tmp_path / "c2l", progress=False)
    script = load("c2l_diagnose")
    args = [str(tmp_path / "c2l" / "last.pt"), "--data", str(phantom_dir), "--images", "8"]
    script.main(args)
    script.main([*args, "--init"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["train", "eval", "init train", "init eval"]
    for line in lines:
        top1 = float(re.search(r"top-1 ([\d.]+)", line).group(1))  # type: ignore[union-attr]
        assert 0 <= top1 <= 1 and "median rank" in line and "query·queue" in line


def test_encode_search_runs_tiny(load: Load, tmp_path: Path) -> None:
    out = tmp_path / "encode.md"
    args = ["--batch", "2", "--repeats", "1", "--config", "resnet18:64", "--out", str(out)]
    load("encode_search").main([*args, "--engine-batch", "4", "--rounds", "2"])
    page = out.read_text()
    row = next(r for r in _rows(page, "resnet18") if len(r) == 6)
    bare, full = float(row[3]), float(row[4])
    assert row[1:3] == ["64", "2"] and bare > 0 and full > 0
    # the page rounds each figure, so their ratio matches the printed one to a few per cent
    # (two decimals: a ratio near 0.07 under load is off by up to 0.005 from rounding alone)
    assert float(row[5].removesuffix("× time")) == pytest.approx(bare / full, rel=0.05, abs=0.01)
    engines = {r[2]: r for r in _rows(page, "resnet18") if len(r) == 7}
    assert set(engines) == {"torch eager", "TorchScript (traced, frozen)", "ONNX Runtime"}
    assert "img/s (batch 4)" in page and "torch.compile was not measured" in page
    assert engines["torch eager"][5:] == ["1.00", "1.00"]  # eager against itself
    for row in engines.values():
        speed = float(row[3].split()[0])  # median (min–max) over the 2 rounds
        low, high = (float(v) for v in row[3].split()[1].strip("()").split("–"))
        assert speed > 0 and low <= speed <= high
        eager = float(engines["torch eager"][3].split()[0])
        assert float(row[5]) == pytest.approx(speed / eager, rel=0.05, abs=0.01)
    # the page says what each row computes and what the pixel statistics alone cost
    assert "`TorchEngine.encode`" in page and "`OnnxEngine.encode`" in page
    pixel_ms = re.search(r"resnet18 at 64 px: ([\d.]+) ms per batch of 4", page)
    assert pixel_ms is not None and float(pixel_ms.group(1)) > 0
    with pytest.raises(SystemExit):
        load("encode_search").main(["--config", "resnet18"])  # BACKBONE:SIZE


SCRIPTED = "TorchScript (traced, frozen)"


def test_encode_search_rows_compute_the_same_figures(load: Load) -> None:
    """Every row gives the torch engine's outputs, map statistics and pixel statistics."""
    import torch

    from cxrhash.models.attention_fusion import AttentionFusionNet
    from cxrhash.models.feature_stats import pixel_statistics
    from cxrhash.models.output import HashOutput

    torch.manual_seed(0)
    model = AttentionFusionNet(bits=8, num_classes=3, backbone="test-cnn", refine_width=16)
    runs, failed = load("encode_search").engine_runners(model.eval(), 64, (3,), False, 1)
    assert not failed and set(runs) == {"torch eager", SCRIPTED, "ONNX Runtime"}
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = runs["torch eager"](x)  # an Encoding, as cxrhash's engines give
        onnx = runs["ONNX Runtime"](x)
        script, script_pixels = runs[SCRIPTED](x)
    stats = eager.map_stats
    assert stats is not None and onnx.map_stats is not None
    torch.testing.assert_close(stats.pixels, pixel_statistics(x), rtol=0, atol=0)
    for pixels in (onnx.map_stats.pixels, script_pixels):
        torch.testing.assert_close(pixels, stats.pixels, rtol=0, atol=0)

    def outputs(o: HashOutput) -> tuple[torch.Tensor | None, ...]:
        return o.hash, o.logits, o.features, o.attention

    for got in (script[:4], outputs(onnx.output)):  # hash, logits, embedding, attention
        for a, b in zip(got, outputs(eager.output), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    for maps in (script[-1], onnx.map_stats.maps):
        torch.testing.assert_close(maps, stats.maps, rtol=1e-3, atol=1e-4)
    # the torch engine's model carries no hook of the other rows' wrapper
    backbone = model.backbone
    assert not backbone._forward_hooks and not backbone._forward_pre_hooks


@pytest.mark.slow
def test_bulk_index_runs_tiny(load: Load, phantom_dir: Path, tmp_path: Path) -> None:
    """20 phantom films indexed by 1 and 2 workers; the table and the merge cost go between
    the markers of a page whose hand-written text stays."""
    script = load("bulk_index")
    out = tmp_path / "scale.md"
    out.write_text(f"# Scale\n\nhand-written\n\n{script.START}\nold\n{script.END}\n\nafter\n")
    args = ["--archive", str(phantom_dir), "--films", "20", "--profile", "test", "--rounds", "1"]
    args += ["--nproc", "1", "--nproc", "2", "--engine", "torch", "--merge-rows", "3000"]
    script.main([*args, "--batch", "8", "--work", str(tmp_path / "w"), "--out", str(out)])
    page = out.read_text()
    assert page.startswith("# Scale\n\nhand-written") and page.endswith("after\n")
    assert "old" not in page and page.count(script.START) == 1
    rows = {r[2]: r for r in _rows(page, "test")}
    assert set(rows) == {"1", "2"}
    for row in rows.values():
        assert row[1] == "torch" and row[3] == "20"  # every film indexed, by 1 and 2 workers
        assert float(row[4].split()[0]) > 0 and float(row[5]) > 0 and float(row[7]) > 0
    assert rows["1"][6] == "1.00"
    assert re.search(r"\*\*[\d.]+ µs per film\*\*", page)
    assert re.search(r"\*\*\d+ bytes per film\*\*", page)
    assert re.search(r"DICOM 2500×2048 12-bit \*\*\d+ ms\*\*", page)


@pytest.mark.slow
def test_hash_layer_runs_tiny(
    load: Load, phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both measurements on the 120 test phantoms: 3 stability steps, a 1-epoch quality run."""
    hash_layer = load("hash_layer")
    data = f"phantom:{phantom_dir}"
    tiny = hash_layer.Setting("tiny", data, "cpu-fast", steps=3, seeds=(0,), note="smoke")
    monkeypatch.setattr(hash_layer, "SETTINGS", (tiny,))
    monkeypatch.setattr(hash_layer, "PHANTOM", data)
    monkeypatch.setattr(hash_layer, "SEEDS", (0,))
    doc = tmp_path / "hash_layer.md"
    hash_layer.main(
        [
            "--out", str(tmp_path / "out"), "--candidates", "identity", "--bits", "16",
            "--epochs", "1", "--threads", "1", "--doc", str(doc),
        ]
    )  # fmt: skip
    page = doc.read_text()
    setting, stability = sorted(_rows(page, "tiny"), key=len, reverse=True)
    assert setting[1] == "cpu-fast" and setting[-1] == "smoke"  # the settings table
    assert stability[1] == "identity" and stability[2] in ("0/1", "1/1")  # diverged of seeds
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["stability"]["tiny|identity|0"]["steps"] in (1, 2, 3)
    (quality,) = _rows(page, "16")
    assert quality[1:3] == ["identity", "1"] and _unit(quality[3]) > 0


def test_rerank_runs_tiny(load: Load, tmp_path: Path) -> None:
    out = tmp_path / "search.md"
    out.write_text("# Search\n\n## Targets\n\nkept\n")
    args = ["--sizes", "2000", "--k", "5", "--queries", "20", "--budget", "0.05"]
    load("rerank").main([*args, "--out", str(out), "--note", "A smoke test."])
    page = out.read_text()
    assert page.startswith("# Search\n\n## Targets\n\nkept\n")
    assert "Command: `OMP_NUM_THREADS=1 python benchmarks/rerank.py --sizes 2000" in page
    assert "--note" not in page and "A smoke test." in page
    rows = _rows(page, "2,000")
    assert [(r[1], r[2]) for r in rows[:2]] == [
        ("flat", "Hamming only"),
        ("flat", "first stage alone (Hamming top 100)"),
    ]
    assert len(rows) == 8 and all(float(r[3]) > 0 for r in rows)


def test_search_runs_tiny(load: Load, tmp_path: Path) -> None:
    out = tmp_path / "search.md"
    args = ["--sizes", "2000", "--kinds", "clustered", "--queries", "20", "--k", "5"]
    args += ["--budget", "0.05", "--hnsw-max", "2000", "--out", str(out)]
    load("search").main(args)
    page = out.read_text()
    assert page.startswith("# Archive-scale Hamming search") and "## Targets" in page
    rows = _rows(page, "clustered")
    names = [r[2] for r in rows]
    assert names[0] == "FAISS IndexBinaryFlat" and "hnsw" in names
    exact = [r for r in rows if r[2].startswith(("FAISS", "HashIndex", "distinct"))]
    assert exact and all(float(r[8]) == 1.0 for r in exact)  # recall of the exact searches


def test_dicomweb_runs_tiny(load: Load, tmp_path: Path) -> None:
    """Our own Orthanc with 6 films of 64 px, 1 and 2 fetchers once; the tables go between
    the markers of a page whose hand-written text stays."""
    from tests.pacs.orthanc_server import find_orthanc

    if find_orthanc() is None:
        if os.environ.get("CI"):
            pytest.fail("needs Debian's orthanc and orthanc-dicomweb (.ci/run installs them)")
        pytest.skip("needs Debian's orthanc and orthanc-dicomweb (.ci/run installs them)")
    script = load("dicomweb")
    out = tmp_path / "pacs.md"
    out.write_text(f"# PACS\n\nhand-written\n\n{script.START}\nold\n{script.END}\n\nafter\n")
    args = ["--films", "6", "--side", "64", "--fetchers", "1", "2", "--rounds", "1"]
    args += ["--profile", "test", "--train-films", "24", "--batch-size", "4"]
    script.main([*args, "--work", str(tmp_path / "w"), "--out", str(out)])
    page = out.read_text()
    assert page.startswith("# PACS\n\nhand-written") and page.endswith("after\n")
    assert "old" not in page and page.count(script.START) == 1
    stages = [_rows(page, name)[0] for name in ("fetch (WADO-RS)", "decode", "encode", "write")]
    assert all(float(row[1]) > 0 for row in stages)
    one, two = _rows(page, "1")[0], _rows(page, "2")[0]
    assert float(one[2]) > 0 and one[3] == "1.00" and float(two[2]) > 0


def test_service_runs_tiny(load: Load, tmp_path: Path) -> None:
    """The test profile on 24 films, 1 and 2 clients for 0.6 s each (in 2 rounds), against a
    real server subprocess on a free loopback port."""
    out = tmp_path / "service.md"
    args = ["--profile", "test", "--films", "24", "--source-px", "64", "--clients", "1", "2"]
    load("service").main(
        [*args, "--seconds", "0.6", "--work", str(tmp_path / "w"), "--out", str(out)]
    )
    page = out.read_text()
    assert page.startswith("# Retrieval server benchmark")
    assert "Command: `python benchmarks/service.py --profile test --films 24" in page
    assert "test-cnn, 32 px, 16 bits" in page
    (bare,) = _rows(page, "decode+encode+search")
    assert int(bare[1]) > 0 and 0 < float(bare[2]) <= float(bare[3]) <= float(bare[4])
    (health,) = _rows(page, "1, `GET /api/health`")
    assert int(health[1]) > 0 and health[2] == "0"
    one, two = _rows(page, "1")[-1], _rows(page, "2")[-1]
    for row in (one, two):
        assert int(row[1]) > 0 and row[2] == "0"  # requests answered, none failed
        assert float(row[3]) == pytest.approx(int(row[1]) / 0.6, rel=0.5)  # req/s ≈ n / time
        decode, encode, search = (float(x) for x in row[9].split(" / "))
        assert decode > 0 and encode > 0 and search > 0
    assert one[4] == "1.00"
    assert float(two[4]) == pytest.approx(float(two[3]) / float(one[3]), abs=0.01)
    assert "Throughput at 2 clients / 1 client" in page
    log = (tmp_path / "w" / "server.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log


@pytest.mark.slow
def test_closeness_runs_tiny(load: Load, tmp_path: Path) -> None:
    """A 1-epoch test-profile run on 100 phantom films, no real films: held-out films and
    noise against its calibrated index."""
    out = tmp_path / "closeness.md"
    args = ["--profile", "test", "--epochs", "1", "--phantom-n", "100", "--noise-n", "12"]
    args += ["--work", str(tmp_path / "work"), "--shared-data", str(tmp_path / "no-real")]
    load("closeness").main([*args, "--out", str(out)])
    page = out.read_text()
    assert page.startswith('# Honest similarity: how often "no close match in this archive"')
    assert "## Index of phantom films, model `run-phantom`" in page and "real NIH" not in page
    (held,) = _rows(page, "held-out films of the same kind")
    (noise,) = _rows(page, "uniform noise")
    assert f"the index holds {100 - int(held[1])} films" in page  # the rest of the 100
    assert 10 <= int(held[1]) <= 30 and noise[1] == "12"
    assert _unit(held[2]) <= 0.2 and _unit(noise[2]) >= 0.9  # verdict: rarely vs. always
    assert (tmp_path / "work" / "index-phantom-run-phantom" / "calibration.npz").is_file()
