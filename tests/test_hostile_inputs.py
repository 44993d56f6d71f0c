"""Issue #11: hostile checkpoints, foreign preprocessing and patient data met by the CLI.

Each test runs ``cxrhash`` in a child process, as a hospital user would, and reads
everything it printed: exit code, stdout, stderr (with ``--verbose`` logging).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import stored_text, subprocess_env, write_dicom
from hostile_files import (
    write_blank_png,
    write_corrupt_jpeg2000_dicom,
    write_deflated,
    write_lying_dicom,
)
from PIL import Image

from cxrhash.config import make_config
from cxrhash.data.images import PREPROCESSING
from cxrhash.data.readers import open_dataset
from cxrhash.data.splits import load_split
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

    index_bytes = b"".join(stored_text(p) for p in out.rglob("*") if p.is_file())
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


# ------------------------------------------------------------------ the hostile corpus

#: Peak resident memory any one command may reach on the corpus. Importing torch and
#: building the test network take ~0.5 GB; believing one header would take 5.7 GB
#: (the 14000² DICOM) or 0.4–120 GB (the others).
PEAK_RSS_MB = 1500
_MEASURED = """
import sys
out = sys.argv.pop(1)
sys.argv[0] = "cxrhash"
try:
    from cxrhash.cli import main
    main()
finally:
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(out, "w") as fh:
        fh.write(str(kib // 1024))
"""


def measured(tmp_path: Path, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the CLI in a child process; its result and its peak resident memory in MiB."""
    rss = tmp_path / f"rss-{len(list(tmp_path.glob('rss-*')))}"
    res = subprocess.run(
        [sys.executable, "-c", _MEASURED, str(rss), *map(str, args)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert "Traceback" not in res.stderr, res.stderr
    return res, int(rss.read_text())


def hostile_films(folder: Path) -> dict[str, str]:
    """Write the corpus of bad films into ``folder``: name → what its skip reason says."""
    folder.mkdir(parents=True, exist_ok=True)
    write_blank_png(folder / "zip_bomb.png", 20000, 20000)  # 50 kB declaring 4·10⁸ pixels
    write_deflated(folder / "deflated_14000.dcm", 14000, 14000)  # 0.4 MB declaring 5.7 GB
    lying = write_lying_dicom(folder, "private element")  # an element of 2^31 bytes
    lying.rename(folder / "element_2gib.dcm")
    write_corrupt_jpeg2000_dicom(folder / "corrupt_j2k.dcm")
    (folder / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image at all\n")
    return {
        "zip_bomb.png": "too many pixels",
        "deflated_14000.dcm": "too many pixels",
        "element_2gib.dcm": "truncated or corrupt",
        "corrupt_j2k.dcm": "cannot decode DICOM pixel data",
        "truncated.png": "truncated or corrupt",
        "empty.png": "file is empty",
        "text.png": "not a recognised image format",
    }


@pytest.fixture(scope="module")
def corpus(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """40 good phantom films, a 1×1 film, the hostile films and a non-UTF-8 file name in
    one ``folder:`` data set."""
    root = tmp_path_factory.mktemp("corpus")
    films = root / "films"
    bad = hostile_films(films)
    rows = ["path,labels,patient_id"]
    for i, src in enumerate(sorted((phantom_dir / "images").glob("*.png"))[:40]):
        (films / src.name).write_bytes(src.read_bytes())
        rows.append(f"{src.name},{'Mass' if i % 3 else ''},p{i // 2}")
    Image.fromarray(np.full((1, 1), 128, np.uint8)).save(films / "one_pixel.png")
    rows.append("one_pixel.png,,p99")
    rows += [f"{name},,q{i}" for i, name in enumerate(bad)]
    (films / os.fsdecode(b"\xff\xfe.png")).write_bytes(b"unlisted, name not UTF-8")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return {"data": f"folder:{films}?csv={root / 'labels.csv'}", "bad": bad, "films": films}


@pytest.mark.slow
def test_the_hostile_corpus_is_skipped_and_counted_by_index_search_and_train(
    corpus: dict[str, object], run_dir: Path, phantom_dir: Path, tmp_path: Path
) -> None:
    bad: dict[str, str] = corpus["bad"]  # type: ignore[assignment]
    films: Path = corpus["films"]  # type: ignore[assignment]
    data = str(corpus["data"])
    out = tmp_path / "idx"

    res, peak = measured(tmp_path, "index", "--checkpoint", run_dir, "--data", data, "--out", out)
    assert res.returncode == 0 and peak < PEAK_RSS_MB, (res.stderr, peak)
    assert "added 41 images" in res.stdout and f"{len(bad)} unreadable skipped" in res.stdout
    for name, reason in bad.items():  # each named once, with its reason, on one line
        (line,) = [
            x for x in res.stderr.splitlines() if x.startswith(f"  unreadable: {films / name}")
        ]
        assert reason in line, line
    assert "one_pixel.png: image is only 1 × 1 pixels" in res.stderr  # read, with a warning
    assert "not valid UTF-8" in res.stderr

    again, peak = measured(tmp_path, "index", "--checkpoint", run_dir, "--data", data, "--out", out)
    assert again.returncode == 0 and peak < PEAK_RSS_MB
    assert "added 0 images" in again.stdout and "41 already indexed" in again.stdout
    verified = cxrhash("index", "--verify", "--index", out)
    assert verified.returncode == 0 and verified.stdout.startswith(f"OK {out}: 41 rows")

    good = next((phantom_dir / "images").glob("*.png"))
    queries = [films / name for name in bad] + [films, tmp_path / "missing.png", good]
    res, peak = measured(tmp_path, "search", *queries, "--index", out, "--json")
    assert res.returncode == 1 and peak < PEAK_RSS_MB, (res.stderr, peak)
    answers = json.loads(res.stdout)
    assert [a["query"] for a in answers] == [str(q) for q in queries]
    assert answers[-1]["error"] is None and len(answers[-1]["hits"]) == 10
    reasons = [*bad.values(), "is a directory", "file not found"]
    for answer, reason in zip(answers[:-1], reasons, strict=True):
        assert reason in answer["error"] and answer["hits"] == [], answer
    assert f"{len(queries) - 1} of {len(queries)} queries could not be read" in res.stderr

    run = tmp_path / "run"
    args = ["train", "--data", data, "--profile", "test", "--epochs", "2", "--out", run]
    res, peak = measured(tmp_path, *args)
    assert res.returncode == 0 and peak < PEAK_RSS_MB, (res.stderr, peak)
    summary = json.loads((run / "train_summary.json").read_text())
    skipped = sorted(Path(s["path"]).name for s in summary["skipped"])
    case_ids = open_dataset(data, 32).case_ids
    split = load_split(run / "split.json", case_ids)
    read = {case_ids[i] for part in ("train", "val") for i in split[part]}  # what training reads
    assert skipped == sorted(read & set(bad)) and skipped, skipped  # once each, not per epoch
    assert f"skipped {len(skipped)} unreadable images" in " ".join(res.stdout.split())


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("latin1", "byte 0xFC is not UTF-8; expected a UTF-8 CSV"),
        ("wide", "a label CSV has at most 10,000"),
        ("chestmnist", "not a MedMNIST .npz file"),
    ],
)
def test_a_hostile_label_file_stops_the_job_with_one_line_naming_it(
    run_dir: Path, tmp_path: Path, spec: str, expected: str
) -> None:
    csv = tmp_path / "labels.csv"
    if spec == "latin1":
        csv.write_bytes("path,labels,patient_id\nM\xfcller.png,,p1\n".encode("latin-1"))
    elif spec == "wide":
        csv.write_text("path,labels,patient_id" + "," * 1_000_000 + "\na.png,,p1\n")
    else:
        csv.write_bytes(b"PK\x03\x04 is how a zip starts, but this is no zip")
    data = f"chestmnist:{csv}" if spec == "chestmnist" else f"folder:{tmp_path}?csv={csv}"
    res, peak = measured(
        tmp_path, "index", "--checkpoint", run_dir, "--data", data, "--out", tmp_path / "i"
    )
    err = one_line_error(res)
    assert expected in err and str(csv) in err and len(err.strip().splitlines()) == 1, err
    assert peak < PEAK_RSS_MB and not (tmp_path / "i").exists()
