"""Issue #14: a case indexed over DICOMweb links back to its instance in the PACS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxrhash.index.pacs_links import PacsLink, is_link, parse_link
from cxrhash.index.pseudonyms import KEY_ENV, KEY_FILE_ENV
from cxrhash.index.store import HashIndex

BASE = "http://127.0.0.1:8042/dicom-web"
STUDY, SERIES, SOP = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.3.4.5"
URL = f"{BASE}/studies/{STUDY}/series/{SERIES}/instances/{SOP}"


def test_a_wado_rs_instance_url_is_parsed_into_its_uids() -> None:
    link = parse_link(URL)
    assert link == PacsLink(BASE, STUDY, SERIES, SOP)
    assert link.wado_url == URL
    assert link.as_dict() == {
        "study_uid": STUDY,
        "series_uid": SERIES,
        "sop_uid": SOP,
        "wado_url": URL,
    }
    assert parse_link(f"https://pacs.example.org/studies/{STUDY}/series/{SERIES}/instances/1.2")
    pushed = parse_link(f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}")
    assert pushed == PacsLink("", STUDY, SERIES, SOP) and pushed.wado_url is None
    assert pushed.stored() == pushed.path and link.stored() == URL


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "/archive/DOE_JANE/film.png",  # a file name: may name the patient
        f"http://user:secret@pacs/studies/{STUDY}/series/{SERIES}/instances/{SOP}",
        f"{URL}?PatientName=DOE",  # a query could carry anything
        f"{URL}/frames/1",
        f"studies/{STUDY}/series/{SERIES}/instances/{SOP}",
        f"/archive/studies/{STUDY}/series/{SERIES}/instances/{SOP}",  # a folder, not a URL
        f"{BASE}/studies/DOE_JANE/series/{SERIES}/instances/{SOP}",  # not a UID
        f"{BASE}/studies/1.02.3/series/{SERIES}/instances/{SOP}",  # leading zero
        f"{BASE}/studies/{'1.' * 32}1/series/{SERIES}/instances/{SOP}",  # 65 characters
        f"{BASE}/../studies/{STUDY}/series/{SERIES}/instances/{SOP}",
        f"ftp://pacs/studies/{STUDY}/series/{SERIES}/instances/{SOP}",
        f"http://pacs/{'a' * 600}/studies/{STUDY}/series/{SERIES}/instances/{SOP}",
    ],
)
def test_anything_else_is_not_a_link(text: str | None) -> None:
    assert parse_link(text) is None
    assert not is_link(text)


def test_a_pseudonymous_index_keeps_pacs_links_but_no_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "keys" / "pseudonym.key"))
    monkeypatch.delenv(KEY_ENV, raising=False)
    codes = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    with HashIndex.create(tmp_path / "idx", 16, "m") as index:
        index.add(
            codes,
            [SOP, "DOE_JANE.png"],
            ["Mass", "Effusion"],
            source_paths=[URL, "/archive/DOE_JANE.png"],
        )
        hits = index.search(codes, 1)
    assert [h[0].source_path for h in hits] == [URL, None]
    assert hits[0][0].case_id != SOP  # the case id is still the keyed pseudonym of the UID
    folder = b"".join(p.read_bytes() for p in (tmp_path / "idx").rglob("*") if p.is_file())
    assert b"DOE_JANE" not in folder
