"""Issue #11: hostile checkpoints, foreign preprocessing and patient data met by the CLI.

Each test runs ``cxrhash`` in a child process, as a hospital user would, and reads
everything it printed: exit code, stdout, stderr (with ``--verbose`` logging).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import subprocess_env, write_dicom
from PIL import Image

from cxrhash.config import make_config
from cxrhash.data.images import PREPROCESSING
from cxrhash.training.checkpoint import (
    ENCODING_FIELDS,
    CheckpointError,
    load_checkpoint,
    model_fingerprint,
)
from cxrhash.training.engine import load_state, save_checkpoint
from cxrhash.training.trainer import train

PHI = {
    "PatientName": "DOE^JANE",
    "PatientID": "MRN0012345",
    "PatientBirthDate": "19610704",
    "OtherPatientIDs": "SSN123456789",
    "PatientAddress": "12 ELM STREET",
    "InstitutionName": "SAINT ELSEWHERE",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "AccessionNumber": "ACC77441",
}
#: What may identify the patient in the test archive: DICOM values and the folder name.
SECRETS = [*PHI.values(), "DOE", "JANE", "0012345", "1961"]


def cxrhash(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "cxrhash.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=cwd,
        timeout=600,
    )


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed, asserting it is short and has no traceback."""
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    return res.stderr


@pytest.fixture(scope="module")
def run_dir(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("hostile") / "run"
    train(make_config("test", data=f"phantom:{phantom_dir}", epochs=1), run, progress=False)
    return run


@pytest.fixture(scope="module")
def index_dir(run_dir: Path, phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile-index") / "idx"
    res = cxrhash(
        "index", "--checkpoint", run_dir, "--data", f"phantom:{phantom_dir}", "--out", out
    )
    assert res.returncode == 0, res.stderr
    return out


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: proof that a loader ran the file's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def test_a_pickled_checkpoint_runs_no_code_from_search_or_an_index_folder(
    index_dir: Path, phantom_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": 2, "kind": "hashing", "config": _RunsCode(marker)}, evil)
    query = next((phantom_dir / "images").glob("*.png"))

    err = one_line_error(cxrhash("search", query, "--index", index_dir, "--checkpoint", evil))
    assert "not a cxrhash checkpoint" in err and not marker.exists()

    folder = tmp_path / "idx"  # an index folder whose model.json names the file
    folder.mkdir()
    for item in index_dir.iterdir():
        if item.is_file():
            (folder / item.name).write_bytes(item.read_bytes())
    (folder / "shards").mkdir()
    for item in (index_dir / "shards").iterdir():
        (folder / "shards" / item.name).write_bytes(item.read_bytes())
    (folder / "model.json").write_text(json.dumps({"checkpoint": str(evil), "model_id": "x"}))
    err = one_line_error(cxrhash("search", query, "--index", folder))
    assert "not a cxrhash checkpoint" in err and not marker.exists()

    (folder / "model.json").write_text("[1, 2]")
    assert "does not name a checkpoint" in one_line_error(
        cxrhash("search", query, "--index", folder)
    )

    torch.load(evil, weights_only=False)  # the file is live: an unsafe loader runs it
    assert marker.exists()


def test_the_model_id_covers_every_setting_that_changes_the_codes(run_dir: Path) -> None:
    payload = load_checkpoint(run_dir)
    state, config = payload["model"], payload["config"]
    base = model_fingerprint(state, config)
    assert base == payload["model_id"]
    changed = {
        "method": "dpsh",
        "backbone": "resnet18",
        "feature_stage": 4,
        "variant": "global",
        "bits": 64,
        "hash_activation": "normalize",
        "image_size": 64,
        "no_finding_class": not config["no_finding_class"],
        "method_params": {"itq": 1.0},
    }
    assert set(changed) == set(ENCODING_FIELDS)
    for field, value in changed.items():
        assert model_fingerprint(state, {**config, field: value}) != base, field
    for field, value in {"lr": 0.5, "epochs": 99, "seed": 7, "data": "elsewhere"}.items():
        assert model_fingerprint(state, {**config, field: value}) == base, field
    name = next(iter(state))
    nudged = {**state, name: state[name] + 1e-6}  # weights, normalisation buffers included
    assert model_fingerprint(nudged, config) != base
    assert any("mean" in k for k in state) and any("std" in k for k in state)
    other = {**PREPROCESSING, "version": -1}
    import cxrhash.training.checkpoint as ckpt

    ckpt.PREPROCESSING, saved = other, ckpt.PREPROCESSING
    try:
        assert model_fingerprint(state, config) != base
    finally:
        ckpt.PREPROCESSING = saved


def test_the_same_weights_with_another_image_size_are_refused_by_the_index(
    run_dir: Path, index_dir: Path, phantom_dir: Path, tmp_path: Path
) -> None:
    state = load_state(run_dir / "best.pt", "hashing")
    state["config"]["image_size"] = 48  # the reviewer's edit: same weights, other input
    save_checkpoint(tmp_path / "edited.pt", state)  # its stored model_id is the old one
    assert load_checkpoint(tmp_path / "edited.pt")["model_id"] != state["model_id"]
    query = next((phantom_dir / "images").glob("*.png"))
    err = one_line_error(
        cxrhash("search", query, "--index", index_dir, "--checkpoint", tmp_path / "edited.pt")
    )
    assert "holds codes made by checkpoint" in err
    ok = cxrhash("search", query, "--index", index_dir, "--json")
    assert ok.returncode == 0, ok.stderr


def test_a_checkpoint_without_weights_is_not_a_cxrhash_checkpoint(tmp_path: Path) -> None:
    torch.save({"format": 2, "kind": "hashing", "config": {"bits": 16}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a cxrhash hashing checkpoint"):
        load_checkpoint(tmp_path / "x.pt")


def test_no_patient_data_reaches_the_index_the_log_or_the_output(
    run_dir: Path, tmp_path: Path
) -> None:
    """DICOMs whose header and folder name identify the patient, indexed and searched."""
    archive = tmp_path / "archive"
    rows = ["path,labels,patient_id"]
    rng = np.random.default_rng(0)
    for i in range(6):
        rel = f"DOE_JANE_MRN0012345/cr{i}.dcm"
        (archive / rel).parent.mkdir(parents=True, exist_ok=True)
        write_dicom(archive / rel, rng.integers(0, 4096, (40, 40)), **PHI)
        rows.append(f"{rel},{'Mass' if i % 2 else ''},MRN0012345")
    (archive / "DOE_JANE_MRN0012345" / "notes.png").write_bytes(b"\x89PNG broken")
    rows.append("DOE_JANE_MRN0012345/notes.png,,MRN0012345")  # an unreadable film
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "idx"
    data = f"folder:{archive}?csv={csv}"

    indexed = cxrhash("index", "--checkpoint", run_dir, "--data", data, "--out", out, "-v")
    assert indexed.returncode == 0, indexed.stderr
    assert "added 6 images" in indexed.stdout and "1 unreadable" in indexed.stdout
    query = tmp_path / "query.png"
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(query)
    found = cxrhash("search", query, archive / "DOE_JANE_MRN0012345/cr1.dcm", "--index", out)
    as_json = cxrhash("search", query, "--index", out, "--json", "-k", "6")
    assert found.returncode == as_json.returncode == 0, found.stderr + as_json.stderr
    hits = json.loads(as_json.stdout)[0]["hits"]
    assert len(hits) == 6 and all(h["case_id"].startswith("c-") for h in hits)

    index_bytes = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in SECRETS:
        assert secret.encode() not in index_bytes, f"{secret} stored in the index"
        assert secret not in as_json.stdout and secret not in as_json.stderr, secret
        assert secret not in indexed.stdout, f"{secret} printed by index"
    # The operator is told which of their files was unreadable, by its path: that is
    # the only place a source name appears, on their own terminal, never in the index.
    assert "notes.png" in indexed.stderr
    logged = indexed.stderr.replace(str(archive / "DOE_JANE_MRN0012345" / "notes.png"), "")
    for secret in SECRETS:
        assert secret not in logged, f"{secret} logged"
