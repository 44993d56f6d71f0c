"""The HTTP side of a ``dicomweb:`` source: credentials refused, bearer token, retries of a
transient failure, TLS options, and the spec's options checked."""

from __future__ import annotations

import os
import time
from io import BytesIO

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

import cxrhash.data.dicomweb.session as session_module
from cxrhash.data import set_max_pixels
from cxrhash.data.dicomweb import (
    DicomWebError,
    DicomWebSource,
    FetchedFilm,
    InstanceError,
    InstanceRef,
    parse_dicomweb_spec,
)
from cxrhash.data.dicomweb.session import make_session
from cxrhash.data.errors import DataFormatError

from .fake_server import Script, fake_dicomweb, qido_record
from .orthanc_server import OrthancServer
from .synthetic_dicoms import BY_NAME, Film, film_dataset

TOKEN_ENV, WRONG_ENV = "CXRHASH_TEST_TOKEN", "CXRHASH_TEST_WRONG_PASSWORD"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv(TOKEN_ENV, "tok-123-secret")
    monkeypatch.setenv(WRONG_ENV, "not-the-password-xyz")
    return monkeypatch


def test_wrong_password_is_a_clear_error(orthanc: OrthancServer, env: pytest.MonkeyPatch) -> None:
    source = DicomWebSource(
        f"dicomweb:{orthanc.dicomweb_url}?user={orthanc.user}&password_env={WRONG_ENV}"
    )
    with pytest.raises(DicomWebError) as caught:
        list(source.instances())
    message = str(caught.value)
    assert orthanc.dicomweb_url in message and "HTTP 401" in message
    assert "credentials" in message and os.environ[WRONG_ENV] not in message


def test_no_credentials_refused_too(orthanc: OrthancServer) -> None:
    with pytest.raises(DicomWebError, match="HTTP 401"):
        list(DicomWebSource(f"dicomweb:{orthanc.dicomweb_url}").instances())


def test_bearer_token_sent(env: pytest.MonkeyPatch) -> None:
    script = Script(records=[qido_record("1.2.3.4")])
    with fake_dicomweb(script) as url:
        refs = list(DicomWebSource(f"dicomweb:{url}?token_env={TOKEN_ENV}").instances())
    assert [ref.sop_uid for ref in refs] == ["1.2.3.4"]
    assert script.seen and all(
        headers.get("Authorization") == "Bearer tok-123-secret" for _, headers in script.seen
    )
    assert "Modality=CR" in script.seen[0][0] and "limit=100" in script.seen[0][0]


def test_transient_503_is_retried() -> None:
    script = Script(failures=2, status=503, records=[qido_record("1.2.3.5")])
    with fake_dicomweb(script) as url:
        start = time.monotonic()
        refs = list(DicomWebSource(f"dicomweb:{url}?modality=DX").instances())
    assert [ref.sop_uid for ref in refs] == ["1.2.3.5"]
    # Two 503s, then the page, then the empty page that ends the listing.
    assert len(script.seen) == 4
    assert script.seen[0][0] == script.seen[1][0] == script.seen[2][0]
    assert time.monotonic() - start >= 0.4  # backed off (0 s, then 0.5 s)


def test_persistent_503_gives_up_with_the_status() -> None:
    script = Script(failures=100, status=503)
    with fake_dicomweb(script) as url:
        with pytest.raises(DicomWebError, match=r"failed while listing: HTTP 503"):
            list(DicomWebSource(f"dicomweb:{url}?modality=DX&retries=1").instances())
    assert len(script.seen) == 2  # the try and one retry: the client does not retry again


def test_server_ignoring_offset_stops_the_listing() -> None:
    script = Script(records=[qido_record("1.2.3.6")])
    with fake_dicomweb(script) as url:
        source = DicomWebSource(f"dicomweb:{url}?modality=DX")
        search = source.client.search_for_instances
        source.client.search_for_instances = (  # type: ignore[method-assign]
            lambda **kw: search(**{**kw, "offset": 0})
        )
        with pytest.raises(DicomWebError, match="ignores offset"):
            list(source.instances())


def test_unreachable_server_named() -> None:
    with fake_dicomweb(Script()) as url:
        pass  # the port is free again
    with pytest.raises(DicomWebError, match="cannot connect") as caught:
        list(DicomWebSource(f"dicomweb:{url}?retries=0&timeout=2").instances())
    assert url in str(caught.value)


def test_tls_options(tmp_path: pytest.TempPathFactory, env: pytest.MonkeyPatch) -> None:
    assert make_session(parse_dicomweb_spec("dicomweb:https://pacs/dw")).verify is True
    assert (
        make_session(parse_dicomweb_spec("dicomweb:https://pacs/dw?verify=false")).verify is False
    )
    bundle = tmp_path / "ca.pem"  # type: ignore[operator]
    bundle.write_text("not checked here")
    session = make_session(parse_dicomweb_spec(f"dicomweb:https://pacs/dw?verify={bundle}"))
    assert session.verify == str(bundle)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("dicomweb:https://pacs/dw?colour=red", r"unknown option\(s\) \['colour'\].*allowed: \["),
        ("dicomweb:ftp://pacs/dw", "http:// or https://"),
        ("dicomweb:https://bob:hunter2@pacs/dw", "credentials in the URL are refused"),
        ("dicomweb:https://pacs/dw?user=bob", "user and password_env go together"),
        ("dicomweb:https://pacs/dw?token_env=A&user=b&password_env=B", "not both"),
        ("dicomweb:https://pacs/dw?password_env=not-a-name&user=b", "environment variable"),
        ("dicomweb:https://pacs/dw?verify=/no/such/ca.pem", "CA bundle"),
        ("dicomweb:https://pacs/dw?page_size=0", "page_size must be"),
        ("dicomweb:https://pacs/dw?timeout=soon", "timeout must be"),
        ("dicomweb:https://pacs/dw?modality=", "modality must be"),
        ("dicomweb:https://pacs/dw?modality=C;R", "modality must be"),
        ("dicomweb:https://pacs/dw?since=2024-01-01", "since must be a date YYYYMMDD"),
        ("nih:https://pacs/dw", "expected dicomweb:URL"),
    ],
)
def test_bad_options_are_named(spec: str, match: str) -> None:
    with pytest.raises(DataFormatError, match=match) as caught:
        parse_dicomweb_spec(spec)
    assert "hunter2" not in str(caught.value)


def test_unset_password_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXRHASH_TEST_UNSET", raising=False)
    with pytest.raises(DataFormatError, match="'CXRHASH_TEST_UNSET' is not set"):
        DicomWebSource("dicomweb:https://pacs/dw?user=bob&password_env=CXRHASH_TEST_UNSET")


def test_defaults() -> None:
    options = parse_dicomweb_spec("dicomweb:https://pacs/dw/?modality=dx,cr,dx&body_part=chest")
    assert options.url == "https://pacs/dw"
    assert options.modalities == ("DX", "CR") and options.body_parts == ("CHEST",)
    assert (options.page_size, options.verify, options.since) == (100, True, None)


def _instance(syntax: str = ExplicitVRLittleEndian) -> tuple[Film, bytes]:
    film = BY_NAME["cr_mono2"]
    ds = film_dataset(film)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return film, buffer.getvalue()


def _fetch(url: str, film: Film) -> FetchedFilm:
    ref = InstanceRef(film.uid("study"), film.uid("series"), film.sop_uid, "CR", None, None)
    return DicomWebSource(f"dicomweb:{url}").fetch(ref)


def test_plain_instance_fetched() -> None:
    film, data = _instance()
    with fake_dicomweb(Script(instance=data, declare_length=False)) as url:
        fetched = _fetch(url, film)
    assert fetched.sop_uid == film.sop_uid and fetched.pixels.shape == (48, 48)


def test_deflated_instance_refused_unread() -> None:
    film, data = _instance(DeflatedExplicitVRLittleEndian)
    with fake_dicomweb(Script(instance=data)) as url, pytest.raises(InstanceError) as caught:
        _fetch(url, film)
    assert caught.value.sop_uid == film.sop_uid and "deflated" in caught.value.reason


@pytest.mark.parametrize("declare_length", [True, False])
def test_oversized_answer_refused(monkeypatch: pytest.MonkeyPatch, declare_length: bool) -> None:
    film, data = _instance()
    monkeypatch.setattr(session_module, "ANSWER_SLACK_BYTES", 1000)
    set_max_pixels(100)
    try:
        script = Script(instance=data, declare_length=declare_length)
        with fake_dicomweb(script) as url, pytest.raises(InstanceError) as caught:
            _fetch(url, film)
    finally:
        set_max_pixels(None)
    assert caught.value.sop_uid == film.sop_uid
    assert "1,200" in caught.value.reason
    assert ("is over" if declare_length else "runs past") in caught.value.reason
