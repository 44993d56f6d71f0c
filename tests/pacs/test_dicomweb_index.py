"""Issue #14 end to end against our own Orthanc: ``cxrhash index --data dicomweb:…`` indexes
the chest films, reports the corrupt one, re-indexes incrementally, resumes after
``kill -9`` with nothing twice or lost, searches with links back to the PACS, and takes
films Orthanc pushes by STOW-RS. No patient name, id or birth date reaches the index."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from io import BytesIO
from pathlib import Path

import pytest
import requests
from conftest import serving, stored_text
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from cxrhash.cli import app
from cxrhash.data.dicomweb import DicomWebSource
from cxrhash.index.store import HashIndex
from cxrhash.pacs_cursor import CURSOR_NAME
from cxrhash.serve import create_app

from .conftest import PASSWORD_ENV
from .orthanc_server import OrthancServer, find_orthanc, start_orthanc
from .synthetic_dicoms import BIRTH_DATE, FILMS, Film, film_dataset

TOKEN = "s3cret-token-for-tests-0123456789"
runner = CliRunner()
TODAY = datetime.now().strftime("%Y%m%d")


@pytest.fixture(scope="module")
def pacs() -> Iterator[OrthancServer]:
    """An Orthanc of this module's own (its tests add instances), with the synthetic set."""
    found = find_orthanc()
    if found is None:
        message = "needs Debian's orthanc and orthanc-dicomweb (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = start_orthanc(*found)
    try:
        for film in FILMS:
            if film.syntax == FILMS[0].syntax:  # the uncompressed ones suffice here
                upload(server, film_dataset(film))
        yield server
    finally:
        server.stop()


def upload(server: OrthancServer, ds) -> str:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return str(server.upload(buffer.getvalue())["ID"])


def copies(n: int, study_date: str, tag: int) -> list:
    """``n`` new instances (new UIDs, another patient) of the first synthetic film."""
    out = []
    for i in range(n):
        ds = film_dataset(FILMS[0])
        for level in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(ds, level, generate_uid(entropy_srcs=["cxrhash-copy", str(tag), str(i), level]))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate, ds.PatientName, ds.PatientID = study_date, f"Qwerty^New{i}", f"NEWPID{i}"
        out.append(ds)
    return out


def spec_of(server: OrthancServer) -> str:
    os.environ[PASSWORD_ENV] = server.password
    return f"dicomweb:{server.dicomweb_url}?user={server.user}&password_env={PASSWORD_ENV}"


def index(tiny_run: Path, spec: str, out: Path, *more: str):
    args = ["index", "--checkpoint", str(tiny_run / "best.pt"), "--data", spec, "--out", str(out)]
    res = runner.invoke(app, [*args, *more])
    assert res.exit_code == 0, res.output
    return res.output


def stored(out: Path) -> list[tuple[str, str | None]]:
    with HashIndex.open(out) as ix:
        return [(case, ix.case(case)[2]) for _, case, _ in ix.iter_metadata()]  # type: ignore[index]


def test_a_pacs_is_indexed_then_only_its_new_films(
    pacs: OrthancServer, tiny_run: Path, tmp_path: Path
) -> None:
    spec, out = spec_of(pacs), tmp_path / "idx"
    uncompressed = [f for f in FILMS if f.syntax == FILMS[0].syntax]
    ok = [f for f in uncompressed if f.expect in ("ok", "old")]
    corrupt = [f for f in uncompressed if f.expect == "corrupt"]
    output = index(tiny_run, spec, out)
    assert f"added {len(ok)} images" in output, output
    assert f"{len(corrupt)} unreadable skipped" in output
    assert all(f.sop_uid in output for f in corrupt)  # which instance, and why
    links = [link for _, link in stored(out)]
    assert sorted(link.rsplit("/", 1)[1] for link in links) == sorted(f.sop_uid for f in ok)
    assert all(link.startswith(pacs.dicomweb_url + "/studies/") for link in links)
    assert json.loads((out / CURSOR_NAME).read_text())["sources"]

    new = copies(3, TODAY, 71)
    for ds in new:
        upload(pacs, ds)
    output = index(tiny_run, spec, out)
    # the cursor lists only the recent studies: the three new ones, nothing already there
    assert "added 3 images" in output and "0 already indexed" in output, output
    assert len(stored(out)) == len(ok) + 3
    assert "added 0 images" in index(tiny_run, spec + "&since=20000101", out)

    secrets = [BIRTH_DATE] + [v for f in FILMS for v in (f.patient_name, f.patient_id)]
    secrets += [str(ds.PatientID) for ds in new] + [str(ds.PatientName) for ds in new]
    for path in out.rglob("*"):
        if path.is_file():
            text = stored_text(path)
            leaked = [s for s in secrets if s.encode() in text or s.split("^")[0].encode() in text]
            assert not leaked, (path.name, leaked)


def test_an_index_killed_mid_run_resumes_with_nothing_twice_or_lost(
    pacs: OrthancServer, tiny_run: Path, tmp_path: Path
) -> None:
    many = copies(40, "20240601", 72)
    for ds in many:
        upload(pacs, ds)
    spec, out = spec_of(pacs) + "&since=20240601", tmp_path / "idx"
    cmd = [sys.executable, "-m", "cxrhash.cli", "index", "--checkpoint", str(tiny_run / "best.pt")]
    cmd += ["--data", spec, "--out", str(out), "--batch-size", "1", "--commit-every", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed, deadline = 0, time.monotonic() + 300
    try:
        while committed < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            if (out / "index.json").is_file():
                with HashIndex.open(out) as ix:
                    committed = len(ix)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 3 <= committed < len(many), f"killed after {committed} of ≥ {len(many)} commits"
    assert not (out / CURSOR_NAME).exists()  # an interrupted run moves no cursor
    output = index(tiny_run, spec, out)
    listed = {ref.sop_uid for ref in DicomWebSource(spec).instances()}  # the copies, and
    assert {str(ds.SOPInstanceUID) for ds in many} <= listed  # today's films of other tests
    with HashIndex.open(out) as ix:
        assert len(ix) == len(listed), output
        cases = [case for _, case, _ in ix.iter_metadata()]
    assert len(set(cases)) == len(cases)
    assert {link.rsplit("/", 1)[1] for _, link in stored(out) if link} == listed


def test_search_links_back_and_orthanc_pushes_films_by_stow_rs(
    pacs: OrthancServer, tiny_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "idx"
    index(tiny_run, spec_of(pacs) + "&since=20240315", out)
    film: Film = FILMS[2]
    query = tmp_path / "query.dcm"
    film_dataset(film).save_as(query, enforce_file_format=True)
    res = runner.invoke(app, ["search", str(query), "--index", str(out), "--json", "-k", "3"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output[res.output.index("[") :])[0]["hits"]
    top = hits[0]["pacs"]
    assert top["sop_uid"] == film.sop_uid and top["study_uid"] == film.uid("study")
    accept = {"Accept": "multipart/related; type=application/dicom"}
    with pacs.session() as session:  # the link opens the original in the PACS
        answer = session.get(top["wado_url"], headers=accept, timeout=30)
    assert answer.status_code == 200 and film.sop_uid.encode() in answer.content

    pushed = copies(1, TODAY, 73)[0]
    orthanc_id = upload(pacs, pushed)
    served = create_app(out, api_token=TOKEN.encode(), pacs_url=pacs.dicomweb_url, upload_rate=None)
    with serving(served) as url, pacs.session() as session:
        server = {"Url": f"{url}/dicomweb/", "HttpHeaders": {"Authorization": f"Bearer {TOKEN}"}}
        session.put(
            f"{pacs.url}/dicom-web/servers/cxrhash", json=server, timeout=30
        ).raise_for_status()
        stow = f"{pacs.url}/dicom-web/servers/cxrhash/stow"
        push = session.post(stow, json={"Resources": [orthanc_id]}, timeout=60)
        assert push.status_code == 200, push.text + pacs.log.read_text()[-3000:]
        with query.open("wb") as handle:
            pushed.save_as(handle, enforce_file_format=True)
        files = {"image": query.read_bytes()}  # other tests' copies of it are there too
        found = requests.post(f"{url}/api/search", files=files, params={"k": 100}, timeout=60)
    sop = str(pushed.SOPInstanceUID)
    linked = [h["pacs"] for h in found.json()["hits"] if (h["pacs"] or {}).get("sop_uid") == sop]
    assert linked and linked[0]["wado_url"].startswith(pacs.dicomweb_url + "/studies/")
    for path in out.rglob("*"):
        if path.is_file():
            assert b"NEWPID0" not in stored_text(path) and b"Qwerty" not in stored_text(path)


def test_findings_keyed_by_sop_uid_make_a_training_set(pacs: OrthancServer, tmp_path: Path) -> None:
    from cxrhash.config import make_config
    from cxrhash.data.readers import open_dataset
    from cxrhash.training.trainer import train

    many = copies(36, "20240901", 74)
    for ds in many:
        upload(pacs, ds)
    csv = tmp_path / "findings.csv"
    rows = ["SOPInstanceUID,Finding Labels,Patient ID"]
    rows += [
        f"{ds.SOPInstanceUID},{('Effusion', 'Mass|Effusion', 'No Finding')[i % 3]},P{i // 2}"
        for i, ds in enumerate(many[:30])  # six listed films have no row: left out
    ]
    rows.append("1.2.3.4.5.6,Mass,P99")  # a row of no listed film: ignored
    csv.write_text("\n".join(rows) + "\n")
    spec = spec_of(pacs) + f"&since=20240901&labels={csv}"
    data = open_dataset(spec, 32)
    assert len(data) == 30 and data.pathologies == ["Effusion", "Mass"]
    first = data.case_ids.index(str(many[1].SOPInstanceUID))
    assert data.labels[first].tolist() == [1.0, 1.0] and data.patient_ids[first] == "P0"
    assert data[first]["img"].shape == (1, 32, 32)  # fetched over WADO-RS when read
    config = make_config("test", data=spec, epochs=1)
    train(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "best.pt").is_file()
