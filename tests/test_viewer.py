"""The viewer's static files and their headers (no model needed: mounted on a bare app). The
browser-driven test is tests/test_viewer_e2e.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cxrhash.serve.errors import install_error_handlers
from cxrhash.serve.viewer import SECURITY_HEADERS, STATIC_DIR, mount_viewer


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    mount_viewer(app)
    return TestClient(app)


class _Inline(HTMLParser):
    """Collects what a ``default-src 'self'`` CSP would block or load from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.sources: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self._in_script = tag == "script"
        if tag == "script" and not names.get("src"):
            self.problems.append("a script without src")
        if tag == "style":
            self.problems.append("a <style> element")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"inline {name}= on <{tag}>")
            if name in ("src", "href") and value:
                self.sources.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline script text")


def test_page_and_assets_are_served_with_the_security_headers(client: TestClient) -> None:
    for path, kind in (
        ("/", "text/html"),
        ("/static/viewer.js", "javascript"),
        ("/static/film.js", "javascript"),
        ("/static/viewer.css", "text/css"),
    ):
        res = client.get(path)
        assert res.status_code == 200, path
        assert kind in res.headers["content-type"], (path, res.headers["content-type"])
        for name, value in SECURITY_HEADERS.items():
            assert res.headers[name] == value, (path, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert client.get("/").text == (STATIC_DIR / "index.html").read_text()


def test_the_page_needs_nothing_inline_nor_from_elsewhere() -> None:
    parser = _Inline()
    parser.feed((STATIC_DIR / "index.html").read_text())
    assert parser.problems == []
    assert sorted(parser.sources) == ["#gallery-heading", "/static/viewer.css", "/static/viewer.js"]
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://|//[a-z0-9-]+\.[a-z]", text), f"{path.name} names a host"
        imports = re.findall(r"^import .* from \"(.*)\";$", text, flags=re.M)
        assert all(i.startswith("./") and (STATIC_DIR / i).is_file() for i in imports), imports
        # Server data reaches the page as text only: no HTML parsing of answers, no eval.
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|eval\(|new Function", text)


def test_static_paths_outside_the_folder_are_json_404(client: TestClient) -> None:
    for path in (
        "/static/../viewer.py",
        "/static/%2e%2e/viewer.py",
        "/static/..%2fviewer.py",
        "/static/nothing.js",
    ):
        res = client.get(path)
        assert res.status_code == 404, path
        assert res.json()["error"]["code"] == "not_found", path
        assert "mount_viewer" not in res.text
