"""The ONNX Runtime engine (issue #15 item 3): export, outputs and codes equal to PyTorch's,
a dynamic batch, the CLI's ``--engine onnx``, and refusal of foreign or broken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import build_phantom_index
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cxrhash.cli import app
from cxrhash.config import make_config
from cxrhash.data.readers import open_dataset
from cxrhash.encode import iter_engine_batches
from cxrhash.index.calibration import read_sample
from cxrhash.inference import EngineSpec, TorchEngine
from cxrhash.inference.onnx_engine import OnnxEngine, OnnxModelError
from cxrhash.inference.onnx_export import OnnxExportError, export_onnx
from cxrhash.methods import METHODS
from cxrhash.models.feature_stats import captured_map_statistics
from cxrhash.serve import create_app
from cxrhash.training.checkpoint import load_model

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run's checkpoint with its graph beside it (best.onnx)."""
    run = tmp_path_factory.mktemp("onnx") / "run"
    run.mkdir()
    shutil.copy(tiny_run / "best.pt", run / "best.pt")
    res = runner.invoke(app, ["export", "--checkpoint", str(run), "--format", "onnx"])
    assert res.exit_code == 0, res.output
    assert (run / "best.onnx").is_file()
    return run


def _encode_all(encoder: object, data: str, size: int, batch: int) -> dict[str, np.ndarray]:
    """Every output of every phantom film, stacked in film order."""
    parts: dict[str, list[np.ndarray]] = {"hash": [], "logits": [], "features": [], "stats": []}
    parts["attention"], parts["pixels"] = [], []
    for enc, _ in iter_engine_batches(
        encoder,  # type: ignore[arg-type]
        open_dataset(data, size),
        batch_size=batch,
        progress=False,
    ):
        assert enc is not None and enc.map_stats is not None
        parts["hash"].append(enc.output.hash.numpy())
        parts["logits"].append(enc.output.logits.numpy())
        parts["features"].append(enc.output.features.numpy())
        parts["stats"].append(enc.map_stats.maps.numpy())
        parts["pixels"].append(enc.map_stats.pixels.numpy())
        if enc.heatmaps is not None:
            parts["attention"].append(enc.heatmaps.numpy())
    return {k: np.concatenate(v) for k, v in parts.items() if v}


def _codes(hashes: np.ndarray) -> np.ndarray:
    return np.packbits(hashes >= 0, axis=1)


def test_the_tiny_model_encodes_alike_at_every_batch_size(exported: Path, phantom_dir: Path):
    model, payload = load_model(exported)
    size = payload["config"]["image_size"]
    data = f"phantom:{phantom_dir}"
    want = _encode_all(TorchEngine(model), data, size, 64)
    engine = OnnxEngine(exported / "best.onnx", model_id=payload["model_id"], image_size=size)
    assert engine.outputs[-1] == "map_stats"
    for batch in (1, 3, 16):  # the graph's batch axis is dynamic
        got = _encode_all(engine, data, size, batch)
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)
        # every one of the 120 films gets the same code as with PyTorch
        assert np.array_equal(_codes(got["hash"]), _codes(want["hash"]))


def test_a_resnet18_attention_fusion_model_matches_torch(phantom_dir: Path, tmp_path: Path):
    config = make_config("test", data="phantom:x", backbone="resnet18", image_size=64)
    torch.manual_seed(0)
    model = METHODS.get("attention-fusion").build_model(config, 5).eval()
    path = export_onnx(model, tmp_path / "r18.onnx", model_id="r18", image_size=64)
    engine = OnnxEngine(path, model_id="r18", image_size=64, threads=1)
    assert set(engine.outputs) == {"hash", "logits", "features", "attention", "map_stats"}
    data = f"phantom:{phantom_dir}"
    want, got = _encode_all(model, data, 64, 32), _encode_all(engine, data, 64, 7)
    for name in want:
        scale = np.abs(want[name]).max()
        np.testing.assert_allclose(got[name], want[name], atol=1e-4 * scale, err_msg=name)
    assert want["stats"].shape == (120, 2 * 256)  # ResNet-18 at stage 3: 256 channels
    # untrained, some outputs sit at 0: a code must agree wherever the sign is not a tie
    clear = np.abs(want["hash"]) > 1e-4
    assert clear.mean() > 0.99
    assert np.array_equal((got["hash"] >= 0)[clear], (want["hash"] >= 0)[clear])
    # the model's own hooks are gone after the export: its closeness statistics are one
    with captured_map_statistics(model) as captured, torch.no_grad():
        model(torch.rand(2, 1, 64, 64))
    assert len(captured) == 1


def test_search_and_index_via_the_cli_give_the_same_hits(
    exported: Path, phantom_dir: Path, tmp_path: Path
) -> None:
    data = f"phantom:{phantom_dir}"
    torch_idx = build_phantom_index(exported, phantom_dir, tmp_path / "t")
    onnx_idx = tmp_path / "o"
    args = ["index", "--checkpoint", str(exported), "--data", data, "--out", str(onnx_idx)]
    res = runner.invoke(app, [*args, "--engine", "onnx", "--onnx-threads", "1"])
    assert res.exit_code == 0, res.output
    codes = "shards/0000.codes"  # all 120 films, in one shard
    assert (onnx_idx / codes).read_bytes() == (torch_idx / codes).read_bytes()
    assert (onnx_idx / "calibration.npz").is_file()  # closeness calibrated through ONNX
    films = [str(p) for p in open_dataset(data, 32).paths[:5]]
    answers = []
    for engine in ("torch", "onnx"):
        search = ["search", *films, "--index", str(torch_idx), "--json", "--engine", engine]
        res = runner.invoke(app, search)
        assert res.exit_code == 0, res.output
        answers.append(json.loads(res.output))
    assert [a["hits"] for a in answers[0]] == [a["hits"] for a in answers[1]]
    verdicts = [[a["closeness"] for a in ans] for ans in answers]
    assert verdicts[0][0] is not None
    assert [v["close"] for v in verdicts[0]] == [v["close"] for v in verdicts[1]]


def test_gradcam_needs_torch(exported: Path, phantom_dir: Path, tmp_path: Path) -> None:
    idx = build_phantom_index(exported, phantom_dir, tmp_path / "i")
    film = str(open_dataset(f"phantom:{phantom_dir}", 32).paths[0])
    args = ["search", film, "--index", str(idx), "--heatmap", "gradcam", "--engine", "onnx"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "use --engine torch" in " ".join(res.output.split())


def _refused(run: Path, onnx_file: Path) -> str:
    spec = EngineSpec("onnx", onnx_file)
    model, payload = load_model(run)
    with pytest.raises(OnnxModelError) as info:
        spec.open(model, payload)
    return str(info.value)


def test_foreign_corrupt_or_missing_graphs_are_refused(exported: Path, tmp_path: Path) -> None:
    good = (exported / "best.onnx").read_bytes()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(good[: len(good) // 2])
    assert "not a readable ONNX model" in _refused(exported, corrupt)
    assert "not found" in _refused(exported, tmp_path / "none.onnx")
    other = onnx.load_model_from_string(good)
    onnx.helper.set_model_props(other, {"cxrhash_onnx_format": "1", "cxrhash_model_id": "abc"})
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(other.SerializeToString())
    assert "exported from model 'abc'" in _refused(exported, foreign)
    custom = onnx.load_model_from_string(good)
    custom.graph.node[0].domain = "evil.ops"
    (tmp_path / "custom.onnx").write_bytes(custom.SerializeToString())
    assert "custom operators" in _refused(exported, tmp_path / "custom.onnx")
    renamed = onnx.load_model_from_string(good)
    renamed.graph.output[0].name = "codes"
    for node in renamed.graph.node:
        node.output[:] = ["codes" if o == "hash" else o for o in node.output]
    (tmp_path / "renamed.onnx").write_bytes(renamed.SerializeToString())
    assert "unexpected outputs" in _refused(exported, tmp_path / "renamed.onnx")


def test_a_network_without_a_dynamic_batch_is_not_exported(tmp_path: Path) -> None:
    config = make_config("test", data="phantom:x", method="saliency-fusion")
    model = METHODS.get("saliency-fusion").build_model(config, 5).eval()
    with pytest.raises(OnnxExportError, match="dynamic batch"):
        export_onnx(model, tmp_path / "s.onnx", model_id="s", image_size=config.image_size)
    assert not (tmp_path / "s.onnx").exists()


def test_the_cli_refuses_onnx_options_without_the_onnx_engine(exported: Path) -> None:
    res = runner.invoke(app, ["search", "x.png", "--index", "nowhere", "--onnx", "f.onnx"])
    assert res.exit_code == 2 and "--engine onnx" in res.output


def test_the_server_searches_alike_with_onnx(
    exported: Path, phantom_dir: Path, tmp_path: Path
) -> None:
    from cxrhash.data.images import load_resized
    from cxrhash.serve.searcher import Searcher

    idx = build_phantom_index(exported, phantom_dir, tmp_path / "i")
    films = [load_resized(p, 32) for p in open_dataset(f"phantom:{phantom_dir}", 32).paths[:3]]
    found = []
    for spec in (None, EngineSpec("onnx", threads=1)):
        searcher = Searcher(idx, exported, engine=spec)
        try:
            found.append([searcher.search(f, 5, "asymmetric") for f in films])
        finally:
            searcher.close()
    assert isinstance(searcher.model, OnnxEngine) and searcher.engine == "onnx"
    for a, b in zip(*found, strict=True):
        assert [h.case_id for h in a.hits[0]] == [h.case_id for h in b.hits[0]]
        assert [h.score for h in a.hits[0]] == pytest.approx([h.score for h in b.hits[0]], abs=1e-4)
        assert a.maps is not None and b.maps is not None
        np.testing.assert_allclose(a.maps.numpy(), b.maps.numpy(), atol=1e-4)
        assert a.closeness[0] is not None and b.closeness[0] is not None
        assert a.closeness[0].close == b.closeness[0].close


def test_the_server_says_which_engine_encodes(
    exported: Path, phantom_dir: Path, tmp_path: Path
) -> None:
    idx = build_phantom_index(exported, phantom_dir, tmp_path / "i")
    graph = tmp_path / "elsewhere" / "tiny.onnx"
    graph.parent.mkdir()
    shutil.copy(exported / "best.onnx", graph)
    answers = []
    for spec in (None, EngineSpec("onnx", threads=2), EngineSpec("onnx", graph)):
        with TestClient(create_app(idx, exported, engine=spec)) as client:
            res = client.get("/api/stats")
        assert res.status_code == 200, res.text
        answers.append(res.json()["engine"])
    assert answers == [
        {"name": "torch", "threads": None, "onnx_file": None},
        {"name": "onnx", "threads": 2, "onnx_file": "best.onnx"},
        {"name": "onnx", "threads": None, "onnx_file": "tiny.onnx"},  # no directory
    ]


def test_calibrating_with_onnx_gives_the_torch_calibration(
    exported: Path, phantom_dir: Path, tmp_path: Path
) -> None:
    idx = build_phantom_index(exported, phantom_dir, tmp_path / "i")
    payload = load_model(exported)[1]
    samples = []
    for engine in (["--engine", "torch"], ["--engine", "onnx", "--onnx-threads", "1"]):
        (idx / "calibration.npz").unlink()
        args = ["index", "--calibrate", "--checkpoint", str(exported), "--out", str(idx)]
        res = runner.invoke(app, [*args, "--data", f"phantom:{phantom_dir}", *engine])
        assert res.exit_code == 0, res.output
        assert "on 120 films" in " ".join(res.output.split())
        samples.append(read_sample(idx, payload["model_id"], payload["config"]["bits"]))
    by_torch, by_onnx = samples
    assert by_torch is not None and by_onnx is not None
    assert by_onnx.represented == by_torch.represented == 120
    for name in ("stats", "pixels", "hashes"):
        want, got = getattr(by_torch, name), getattr(by_onnx, name)
        assert got.shape == want.shape and len(want) == 120
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5, err_msg=name)
    # the calibration is encoded by the graph asked for: a missing one is an error
    res = runner.invoke(app, [*args, "--data", f"phantom:{phantom_dir}", "--engine", "onnx",
                              "--onnx", str(tmp_path / "none.onnx")])  # fmt: skip
    assert res.exit_code == 2 and "not found" in " ".join(res.output.split())
