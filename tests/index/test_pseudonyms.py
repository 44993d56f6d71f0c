"""Issue #11, finding 2: an index folder alone reveals no patient, case name or path."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from cxrhash.index.errors import IndexCorruptError, IndexMismatchError
from cxrhash.index.pseudonyms import (
    KEY_ENV,
    KEY_FILE_ENV,
    Pseudonymizer,
    PseudonymKeyError,
    load_pseudonymizer,
)
from cxrhash.index.store import HashIndex

BITS = 16
PATIENTS = [f"{10000 + i:08d}" for i in range(12)]  # NIH-style numeric ids
CASES = [f"{p}_000.png" for p in PATIENTS]  # NIH names carry the patient number
PATHS = [f"/archive/DOE_JANE_MRN{p}/{c}" for p, c in zip(PATIENTS, CASES, strict=True)]


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh key location for this test (not yet created)."""
    path = tmp_path / "keys" / "pseudonym.key"
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    monkeypatch.delenv(KEY_ENV, raising=False)
    return path


def _codes(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, BITS // 8), dtype=np.uint8)


def _fill(path: Path, **create: object) -> HashIndex:
    index = HashIndex.create(path, BITS, "m", **create)  # type: ignore[arg-type]
    index.add(
        _codes(len(CASES)), CASES, ["Mass"] * len(CASES), patient_ids=PATIENTS, source_paths=PATHS
    )
    return index


def _folder_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def test_the_folder_alone_holds_no_id_name_or_path_and_resists_the_salt_attack(
    tmp_path: Path, key_file: Path
) -> None:
    index = _fill(tmp_path / "idx")
    hits = index.search(_codes(len(CASES))[:1], 3)[0]
    index.close()
    blob = _folder_bytes(tmp_path / "idx")
    for secret in [*PATIENTS, *CASES, "DOE_JANE", "archive"]:
        assert secret.encode() not in blob, secret
    key_hex = key_file.read_text().strip()
    assert key_hex.encode() not in blob and len(bytes.fromhex(key_hex)) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # created on first use, owner-only
    conn = sqlite3.connect(tmp_path / "idx" / "meta.sqlite")
    rows = conn.execute("SELECT case_id, patient_hash, source_path FROM items").fetchall()
    conn.close()
    assert all(c.startswith("c-") and len(c) == 26 for c, _, _ in rows)
    assert all(p.startswith("p-") and len(p) == 34 for _, p, _ in rows)
    assert {path for _, _, path in rows} == {None}
    assert hits[0].case_id.startswith("c-") and hits[0].source_path is None
    # The reviewer's attack: every candidate id hashed with whatever the folder holds.
    manifest = (tmp_path / "idx" / "index.json").read_text()
    stored = {p for _, p, _ in rows}
    for pid in PATIENTS:
        for salt in ["", manifest, json.loads(manifest)["pseudonyms"]["key_id"]]:
            guess = hashlib.sha256((salt + pid).encode()).hexdigest()
            assert "p-" + guess[:32] not in stored and guess not in stored
    # With the key, the holder recomputes the same pseudonyms (and no one else does).
    mine = load_pseudonymizer()
    assert stored == {mine.patient(p) for p in PATIENTS}
    assert Pseudonymizer(os.urandom(32)).patient(PATIENTS[0]) not in stored


def test_the_key_holder_finds_and_removes_cases_by_their_source_ids(
    tmp_path: Path, key_file: Path
) -> None:
    index = _fill(tmp_path / "idx")
    index.close()
    index = HashIndex.open(tmp_path / "idx")
    assert index.contains([CASES[3], "unknown.png"]) == [True, False]
    assert index.stored_case_id(CASES[3]) == load_pseudonymizer().case(CASES[3])
    assert index.remove([CASES[3]]) == 1 and index.contains([CASES[3]]) == [False]
    index.close()


def test_another_key_is_refused_instead_of_indexing_everything_again(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(tmp_path / "idx").close()
    monkeypatch.setenv(KEY_ENV, os.urandom(32).hex())
    index = HashIndex.open(tmp_path / "idx")
    assert len(index.search(_codes(1), 2)[0]) == 2  # searching needs no key
    with pytest.raises(IndexMismatchError, match=f"pseudonym key .*{KEY_FILE_ENV}"):
        index.contains(CASES[:1])
    with pytest.raises(IndexMismatchError, match="pseudonym key"):
        index.add(_codes(1), ["new.png"], ["Mass"])
    index.close()


def test_source_names_are_kept_only_on_opt_in(tmp_path: Path, key_file: Path) -> None:
    index = _fill(tmp_path / "kept", source_names=True)
    hit = index.search(_codes(1), 1)[0][0]
    assert hit.case_id == CASES[0] and hit.source_path == PATHS[0]
    index.close()
    blob = _folder_bytes(tmp_path / "kept")
    assert CASES[0].encode() in blob
    assert PATIENTS[0].encode() + b"\0" not in blob  # patients stay pseudonymous even so
    with pytest.raises(IndexMismatchError, match="--keep-source-names"):
        HashIndex.open_or_create(tmp_path / "kept", BITS, "m", source_names=False)


def test_bad_keys_and_a_key_inside_the_index_folder_are_refused(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "not hex at all")
    with pytest.raises(PseudonymKeyError, match=f"\\${KEY_ENV} is not hexadecimal"):
        load_pseudonymizer()
    monkeypatch.setenv(KEY_ENV, "abcd")
    with pytest.raises(PseudonymKeyError, match="at least 16"):
        load_pseudonymizer()
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "idx" / "pseudonym.key"))
    with pytest.raises(PseudonymKeyError, match="inside the index folder"):
        HashIndex.create(tmp_path / "idx", BITS, "m")
    assert not (tmp_path / "idx" / "pseudonym.key").exists()


def test_an_index_from_before_the_keyed_pseudonyms_says_to_re_index(
    tmp_path: Path, key_file: Path
) -> None:
    _fill(tmp_path / "idx").close()
    manifest_path = tmp_path / "idx" / "index.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["salt"] = manifest.pop("pseudonyms")["key_id"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match="lacks the field.* pseudonyms"):
        HashIndex.open(tmp_path / "idx")
