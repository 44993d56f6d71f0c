"""End-to-end through the CLI: train → eval → index (append) → search, on phantom films."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dicom
from PIL import Image
from typer.testing import CliRunner

from cxrhash.cli import app
from cxrhash.config import TrainConfig
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import load_split
from cxrhash.index.codes import pack_codes
from cxrhash.index.store import HashIndex

runner = CliRunner()


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def test_help_lists_commands() -> None:
    out = _ok(["--help"])
    for cmd in ("train", "pretrain", "eval", "bench", "index", "search", "demo", "phantom"):
        assert cmd in out


def test_pipeline_end_to_end(phantom_dir: Path, tmp_path: Path) -> None:
    run, idx = tmp_path / "run", tmp_path / "idx"
    data = f"phantom:{phantom_dir}"
    _ok(["train", "--data", data, "--out", str(run), "--profile", "test", "--epochs", "1"])
    report = json.loads(_ok(["eval", str(run), "--json", "--random-seeds", "2"]))
    rows = report["protocols"]["strict"]["rows"]
    assert {"hash codes", "float upper bound (cosine)", "LSH on features", "random codes"} <= set(
        rows
    )
    for key in ("mAP", "mAP@100", "mAP@100_minkR", "nDCG@100", "ACG@100", "mAP_w", "P@10"):
        assert 0.0 <= rows["hash codes"][key] <= 1.0 or key == "ACG@100", key
    assert (run / "eval.json").exists()

    out = _ok(
        ["index", "--checkpoint", str(run), "--data", data, "--part", "database", "--out", str(idx)]
    )
    assert "added" in out
    again = _ok(
        ["index", "--checkpoint", str(run), "--data", data, "--part", "database", "--out", str(idx)]
    )
    assert "added 0 images" in again  # appending skips what is already indexed

    ds = open_dataset(data, 32)
    split = load_split(run / "split.json", ds.case_ids)
    row = int(split["database"][0])
    hits = json.loads(
        _ok(
            ["search", str(ds.paths[row]), "--index", str(idx), "-k", "50", "--json"]
            + ["--rerank", "none"]  # Hamming order: ascending distances
        )
    )[0]["hits"]
    assert hits[0]["distance"] == 0
    same = [h for h in hits if h["case_id"] == _stored_id(idx, ds.case_ids[row])]
    assert same and same[0]["distance"] == 0  # an indexed film finds itself at distance 0
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    png = tmp_path / "hits.png"
    _ok(["search", str(ds.paths[row]), "--index", str(idx), "--plot", str(png)])
    assert png.stat().st_size > 1000

    # one bad query among several: reported with its reason, the others answered, exit 1
    bad = str(tmp_path / "missing.png")
    both = [str(ds.paths[row]), bad]
    res = runner.invoke(app, ["search", *both, "--index", str(idx), "--json", "--plot", str(png)])
    assert res.exit_code == 1, (res.output, res.exception)
    entries = json.loads(res.stdout)
    assert [(e["query"], e["error"]) for e in entries] == [(both[0], None), (bad, "file not found")]
    assert entries[0]["hits"][0]["distance"] == 0 and entries[1]["hits"] == []
    assert f"error: query {bad}: file not found" in res.stderr
    assert "1 of 2 queries could not be read" in res.stderr
    res = runner.invoke(app, ["search", bad, *both, "--index", str(idx)])
    assert res.exit_code == 1 and res.stdout.count("query ") == 1  # one table: the good one
    assert "2 of 3 queries could not be read" in res.stderr

    (tmp_path / "notes.txt").write_text("x")
    res = runner.invoke(
        app,
        ["index", "--checkpoint", str(run), "--data", data, "--out", str(tmp_path / "notes.txt")],
    )
    assert res.exit_code == 2  # one line through the CLI's error handler
    assert "notes.txt: it is a file, not a folder" in res.output


def _stored_id(index_dir: Path, case_id: str) -> str:
    """The pseudonym an index made without --keep-source-names shows for ``case_id``."""
    with HashIndex.open(index_dir) as index:
        return index.stored_case_id(case_id)


def test_bad_data_spec_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "--data", "nope:x", "--out", str(tmp_path / "r")])
    assert res.exit_code != 0
    assert res.exit_code == 2 and "unknown scheme 'nope'" in res.output


def test_search_accepts_a_dicom_query(phantom_dir: Path, tmp_path: Path) -> None:
    run, idx = tmp_path / "run", tmp_path / "idx"
    data = f"phantom:{phantom_dir}"
    _ok(["train", "--data", data, "--out", str(run), "--profile", "test", "--epochs", "1"])
    index_args = ["index", "--checkpoint", str(run), "--data", data, "--out", str(idx)]
    _ok([*index_args, "--backend", "distinct", "--shard-size", "50", "--keep-source-names"])
    manifest = json.loads((idx / "index.json").read_text())
    assert manifest["backend"]["name"] == "distinct" and manifest["shard_size"] == 50
    assert [s["rows"] for s in manifest["shards"]] == [50, 50, 20]  # 120 phantom films
    res = runner.invoke(app, [*index_args, "--backend", "flat"])
    assert res.exit_code == 2 and "'distinct' backend, not 'flat'" in " ".join(res.output.split())
    ds = open_dataset(data, 32)
    dcm = tmp_path / "query.dcm"
    png = np.asarray(Image.open(str(ds.paths[0])), dtype=np.uint16) * 16
    write_dicom(dcm, png, bits=12)
    png_hits = json.loads(_ok(["search", str(ds.paths[0]), "--index", str(idx), "--json"]))
    dcm_hits = json.loads(_ok(["search", str(dcm), "--index", str(idx), "--json"]))
    assert len(dcm_hits[0]["hits"]) == 10
    # min–max windowing of the DICOM equals the PNG's /255 scaling up to an affine map,
    # which leaves the film's own code at a small distance
    own = [h for h in dcm_hits[0]["hits"] if h["case_id"] == ds.case_ids[0]]
    assert png_hits[0]["hits"][0]["distance"] == 0
    assert own, "the DICOM copy of an indexed film should retrieve that film"


def test_model_options_reach_the_saved_config(phantom_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _ok(
        ["train", "--data", f"phantom:{phantom_dir}", "--out", str(run), "--profile", "test",
         "--epochs", "1", "--feature-stage", "4", "--hash-activation", "tanh",
         "--variant", "no-fmax", "--margin", "3.5", "--no-augment", "--grad-clip", "5",
         "--warmup-epochs", "0.5", "--amp", "off"]
    )  # fmt: skip
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["augment"], cfg["grad_clip"], cfg["warmup_epochs"], cfg["amp"]) == (
        False,
        5.0,
        0.5,
        "off",
    )
    assert (cfg["feature_stage"], cfg["hash_activation"], cfg["variant"], cfg["margin"]) == (
        4,
        "tanh",
        "no-fmax",
        3.5,
    )


def test_method_params_reach_config_and_bad_ones_fail(phantom_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "osdh"
    _ok(
        ["train", "--data", f"phantom:{phantom_dir}", "--out", str(run), "--profile", "test",
         "--epochs", "1", "--method", "osdh", "--param", "rho=3", "--param", "lambda_c=0"]
    )  # fmt: skip
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "osdh" and cfg["method_params"] == {"rho": 3.0, "lambda_c": 0.0}
    bad = runner.invoke(
        app,
        ["train", "--data", f"phantom:{phantom_dir}", "--out", str(tmp_path / "x"),
         "--profile", "test", "--method", "dsh", "--param", "rho=3"],
    )  # fmt: skip
    assert bad.exit_code == 2 and "has no parameter" in bad.output
    bad = runner.invoke(app, ["train", "--data", "phantom:x", "--out", "y", "--param", "rho"])
    assert bad.exit_code == 2 and "NAME=NUMBER" in bad.output


def test_methods_lists_papers_baselines_and_parameters() -> None:
    out = _ok(["methods"])
    for name in ("osdh", "semantic-attention", "saliency-fusion", "hashnet", "ath"):
        assert f"method    {name}" in out
    assert "rho=5" in out


def test_bench_cli_scores_external_codes_and_rejects_unknown_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ext = tmp_path / "ext"
    ext.mkdir()
    np.save(ext / "query_codes.npy", rng.integers(0, 2, (10, 16)))
    np.save(ext / "db_codes.npy", rng.integers(0, 2, (30, 16)))
    np.save(ext / "query_labels.npy", rng.integers(0, 2, (10, 3)).astype(float))
    np.save(ext / "db_labels.npy", rng.integers(0, 2, (30, 3)).astype(float))
    out = _ok(["bench", "--out", str(tmp_path / "b"), "--external", f"other={ext}", "-q"])
    assert "1 cells in the report" in out
    md = (tmp_path / "b" / "report" / "report.md").read_text()
    assert "ext:other" in md
    bad = runner.invoke(
        app, ["bench", "--out", str(tmp_path / "c"), "--data", "phantom:x", "--methods", "nope"]
    )
    assert bad.exit_code == 2 and "unknown method 'nope'" in bad.output
    bad = runner.invoke(app, ["bench", "--out", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "--external" in bad.output


def test_train_resume_refuses_changed_options_and_takes_more_epochs(
    phantom_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    base = ["train", "--data", f"phantom:{phantom_dir}", "--out", str(run)]
    first = _ok([*base, "--profile", "test", "--epochs", "1", "--split-fractions", SPLIT])
    assert "codes rotated by ITQ on" in " ".join(first.split())  # attention-fusion's default
    saved = json.loads((run / "config.json").read_text())
    assert saved["split_fractions"]["train"] == 0.7
    bad = runner.invoke(app, [*base, "--resume", "--bits", "32", "--lr", "0.5"])
    assert bad.exit_code == 2
    text = " ".join(bad.output.split())
    assert "bits (16 vs 32)" in text and "lr (0.01 vs 0.5)" in text, text
    _ok([*base, "--resume", "--epochs", "2"])  # the saved settings, one more epoch
    assert len(json.loads((run / "history.json").read_text())) == 2
    bad = runner.invoke(app, [*base.copy(), "--split-fractions", "train=0.9,val=0.2"])
    assert bad.exit_code == 2 and "--split-fractions" in bad.output


SPLIT = "train=0.7,val=0.1,query=0.1,database=0.1"


def _config_of_train(args: list[str], monkeypatch: pytest.MonkeyPatch) -> TrainConfig:
    """The config `cxrhash train ARGS` would train (the training itself is replaced)."""
    seen: list[TrainConfig] = []

    def fake_train(config: TrainConfig, out: Path, *, resume: bool = False) -> object:
        seen.append(config)
        raise ValueError("stopped before training")

    monkeypatch.setattr("cxrhash.training.trainer.train", fake_train)
    res = runner.invoke(app, ["train", "--data", "phantom:x", "--out", "r", *args])
    assert res.exit_code == 2 and "stopped before training" in res.output, res.output
    return seen[0]


def test_paper_profile_builds_saliency_fusion_on_densenet121(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sf = _config_of_train(["--method", "saliency-fusion"], monkeypatch)
    assert sf.backbone == "densenet121" and sf.profile == "paper"
    explicit = ["--method", "saliency-fusion", "--backbone", "resnet34"]
    assert _config_of_train(explicit, monkeypatch).backbone == "resnet34"
    assert _config_of_train(["--method", "osdh"], monkeypatch).backbone == "resnet50"
    assert _config_of_train([], monkeypatch).backbone == "resnet50"  # attention-fusion
    cpu = ["--method", "saliency-fusion", "--profile", "cpu"]
    assert _config_of_train(cpu, monkeypatch).backbone == "resnet18"
    assert "backbone in --profile paper: densenet121" in _ok(["methods"])


def test_paper_bench_cells_of_saliency_fusion_use_densenet121() -> None:
    from cxrhash.bench.runner import BenchSpec

    spec = BenchSpec(data="phantom:x", profile="paper")
    assert spec.base_config("saliency-fusion").backbone == "densenet121"
    assert spec.base_config("attention-fusion").backbone == "resnet50"
    assert spec.base_config().backbone == "resnet50"  # frozen features, splits
    pinned = BenchSpec(data="phantom:x", profile="paper", overrides={"backbone": "resnet18"})
    assert pinned.base_config("saliency-fusion").backbone == "resnet18"


def test_two_stage_search_and_float_store_flags_end_to_end(
    phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxrhash.cli import common

    monkeypatch.setattr(common.console, "width", 250)  # room for the eval table's row names
    run, idx, plain = tmp_path / "run", tmp_path / "idx", tmp_path / "plain"
    data = f"phantom:{phantom_dir}"
    # The paper's loss: the default ramps the code terms in over 2 epochs, so after one
    # epoch many films still share a code and the asymmetric score ties (⟨f, sign f⟩ is
    # the best any code can do, so a film finds itself first only when its code is unique).
    train = ["train", "--data", data, "--out", str(run), "--profile", "test", "--epochs", "1"]
    _ok([*train, "--param", "paper=1"])
    shown = _ok(
        ["eval", str(run), "--protocol", "strict", "--random-seeds", "1", "--shortlist", "20"]
    )
    for text in ("two-stage (asymmetric", "two-stage (stored", "distinct share", "L = 20"):
        assert text in shown, text
    rows = json.loads((run / "eval.json").read_text())["protocols"]["strict"]["rows"]
    assert 0 < rows["hash codes"]["distinct_share"] <= 1
    assert 0 <= rows["two-stage (stored floats)"]["mAP"] <= 1

    index_args = ["index", "--checkpoint", str(run), "--data", data]
    _ok([*index_args, "--out", str(idx), "--store-floats"])
    _ok([*index_args, "--out", str(plain)])
    manifest = json.loads((idx / "index.json").read_text())
    assert manifest["floats"]["row_bytes"] == 2 * manifest["bits"]
    assert "floats" not in json.loads((plain / "index.json").read_text())
    res = runner.invoke(app, [*index_args, "--out", str(plain), "--store-floats"])
    assert res.exit_code == 2 and "--store-floats" in " ".join(res.output.split())

    ds = open_dataset(data, 32)
    query = str(ds.paths[5])
    search = ["search", query, "-k", "8", "--json"]
    by_mode = {}
    for mode in ("none", "asymmetric", "floats"):
        out = _ok([*search, "--index", str(idx), "--rerank", mode, "--shortlist", "30"])
        by_mode[mode] = json.loads(out)[0]["hits"]
    assert all(h["score"] is None for h in by_mode["none"])
    for mode in ("asymmetric", "floats"):
        scores = [h["score"] for h in by_mode[mode]]
        assert scores == sorted(scores, reverse=True), mode
        assert by_mode[mode][0]["case_id"] == _stored_id(idx, ds.case_ids[5])  # itself first
    default = json.loads(_ok([*search, "--index", str(idx)]))[0]["hits"]
    assert default == by_mode["none"]  # docs/search.md: no re-rank unless asked for
    assert "re-rank score" in _ok(["search", query, "--index", str(idx), "--rerank", "floats"])

    res = runner.invoke(app, [*search, "--index", str(plain), "--rerank", "floats"])
    assert res.exit_code == 2 and "--store-floats" in " ".join(res.output.split())
    res = runner.invoke(
        app, [*search, "--index", str(idx), "--rerank", "asymmetric"] + ["--shortlist", "5"]
    )
    assert res.exit_code == 2 and "at least the k = 8" in " ".join(res.output.split())
    res = runner.invoke(app, [*search, "--index", str(idx), "--rerank", "cosine"])
    assert res.exit_code == 2 and "unknown re-rank mode" in " ".join(res.output.split())
    assert "--store-floats" in _ok(["index", "--help"])
    for option in ("--rerank", "--shortlist", "asymmetric", "floats"):
        assert option in _ok(["search", "--help"]), option


def test_search_default_rerank_is_the_documented_one() -> None:
    import inspect

    from cxrhash.cli.archive import search
    from cxrhash.retrieve import DEFAULT_RERANK, search_images

    assert inspect.signature(search).parameters["rerank"].default == DEFAULT_RERANK
    assert inspect.signature(search_images).parameters["rerank"].default == DEFAULT_RERANK


def test_index_verify_prints_ok_or_the_damaged_rows(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    index = HashIndex.create(idx, 16, "m")
    index.add(pack_codes(np.eye(16)[:10] > 0), [f"c{i}" for i in range(10)], ["Mass"] * 10)
    index.close()
    res = runner.invoke(app, ["index", "--verify", "--index", str(idx)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == (
        f"OK {idx}: 10 rows (0 removed); the codes match their CRC-32s, the metadata of all "
        "10 rows matches its SHA-256s"
    )
    conn = sqlite3.connect(idx / "meta.sqlite")
    with conn:
        conn.execute("UPDATE items SET findings = 'No Finding' WHERE row = 3")
    conn.close()
    res = runner.invoke(app, ["index", "--verify", "--out", str(idx)])
    assert res.exit_code == 1
    lines = res.stderr.splitlines()
    assert lines[0] == f"CORRUPT {idx}: 1 problem(s)"
    assert "the metadata of rows 0–9 in meta.sqlite" in lines[1] and "SHA-256" in lines[1]
    shard = idx / "shards" / "0000.codes"
    shard.write_bytes(shard.read_bytes()[:-2])
    res = runner.invoke(app, ["index", "--verify", "--index", str(idx)])
    assert res.exit_code == 1 and "0000.codes is truncated" in res.stderr
    res = runner.invoke(app, ["index", "--verify", "--index", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no hash index" in res.stderr
    res = runner.invoke(app, ["index", "--verify", "--index", str(idx), "--data", "phantom:x"])
    assert res.exit_code == 2 and "--verify takes the index folder" in res.stderr
    res = runner.invoke(app, ["index", "--out", str(idx)])
    assert res.exit_code == 2 and "needs --checkpoint, --data and --out" in res.stderr
