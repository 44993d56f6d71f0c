"""A tiny loopback HTTP server that plays a DICOMweb server badly: it records each request's
path and headers, answers the first ``failures`` requests with ``status``, then answers
QIDO-RS with canned records (one page, then an empty one) and WADO-RS with a canned
instance (with or without a Content-Length)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Script:
    """What the fake server does, and what it saw."""

    failures: int = 0
    status: int = 503
    records: list[dict] = field(default_factory=list)
    instance: bytes = b""
    declare_length: bool = True
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def qido_record(sop: str, modality: str = "DX") -> dict:
    """A QIDO-RS instance record, with patient attributes a source must drop."""
    return {
        "0020000D": {"vr": "UI", "Value": ["1.2.3.1"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3.2"]},
        "00080018": {"vr": "UI", "Value": [sop]},
        "00080060": {"vr": "CS", "Value": [modality]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Fake^Patient"}]},
        "00100020": {"vr": "LO", "Value": ["FAKEPID"]},
    }


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            script.seen.append((self.path, dict(self.headers.items())))
            if len(script.seen) <= script.failures:
                self._answer(script.status, b"try again")
                return
            if "/instances/" in self.path:
                body = b"--XYZ\r\nContent-Type: application/dicom\r\n\r\n"
                body += script.instance + b"\r\n--XYZ--\r\n"
                kind = 'multipart/related; type="application/dicom"; boundary=XYZ'
                self._answer(200, body, kind, script.declare_length)
                return
            offset = int(self.path.partition("offset=")[2].partition("&")[0] or 0)
            body = json.dumps(script.records if offset == 0 else []).encode()
            self._answer(200, body, "application/dicom+json")

        def _answer(
            self, status: int, body: bytes, kind: str = "text/plain", length: bool = True
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def fake_dicomweb(script: Script) -> Iterator[str]:
    """Serve ``script`` on a loopback port; yields the DICOMweb root URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
