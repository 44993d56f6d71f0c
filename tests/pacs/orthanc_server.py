"""Our own Orthanc for the tests: Debian's ``orthanc`` and ``orthanc-dicomweb`` (installed by
.ci/run), started on free ports with a temporary storage folder and a generated
configuration (DICOMweb plugin on, remote access off, HTTP basic auth on), and stopped by
:meth:`OrthancServer.stop`, which an ``atexit`` hook also calls; and on Linux the kernel
sends it SIGTERM if the test process dies without running either (SIGKILL): it is stopped
whatever happens.

By hand (docs/pacs.md): ``python tests/pacs/orthanc_server.py`` starts one and prints its
URL, user and password until Ctrl-C.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

USER, PASSWORD = "cxrhash", "orthanc-test-password"
WAIT_S = 30
#: Where Debian puts the server and the DICOMweb plugin (the first that exists is used).
BINARIES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


def find_orthanc() -> tuple[str, str] | None:
    """The Orthanc binary and the DICOMweb plugin, or ``None`` if either is missing."""
    binary = shutil.which("Orthanc") or next((b for b in BINARIES if Path(b).is_file()), None)
    plugin = next((p for p in PLUGINS if Path(p).is_file()), None)
    if plugin is None:
        plugin = next(
            (str(p) for p in Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")), None
        )
    return (binary, plugin) if binary and plugin else None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the fixture's finalizer and atexit still stop it


def free_port() -> int:
    """A loopback port nobody listens on now (Orthanc binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def orthanc_config(storage: Path, plugin: str, http_port: int, dicom_port: int) -> dict:
    """A test configuration: loopback-only HTTP with basic auth, DICOMweb on, the DICOM
    port closed to every modality (none is declared and none is always allowed)."""
    return {
        "Name": "cxrhash-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [plugin],
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "CXRHASHTEST",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "HttpDescribeErrors": True,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckCalledAet": True,
        "DicomModalities": {},
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }


@dataclass
class OrthancServer:
    """A running Orthanc of ours: its REST URL, DICOMweb root, credentials and process."""

    url: str
    dicom_port: int
    process: subprocess.Popen
    folder: Path
    log: Path
    user: str = USER
    password: str = PASSWORD
    _stopped: bool = field(default=False, repr=False)

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def session(self) -> requests.Session:
        """A session logged in as the test user (for the REST API)."""
        session = requests.Session()
        session.auth = (self.user, self.password)
        return session

    def upload(self, data: bytes) -> dict:
        """POST one DICOM file to ``/instances``; Orthanc's answer."""
        with self.session() as session:
            answer = session.post(f"{self.url}/instances", data=data, timeout=WAIT_S)
        answer.raise_for_status()
        return dict(answer.json())

    def stop(self) -> None:
        """Terminate (then kill) the server and remove its storage; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_orthanc(binary: str, plugin: str, tries: int = 3) -> OrthancServer:
    """Start our Orthanc and wait until it answers (a port taken meanwhile: try again)."""
    for attempt in range(tries):
        server = _launch(binary, plugin)
        try:
            _wait_ready(server)
            return server
        except RuntimeError:
            server.stop()
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def _launch(binary: str, plugin: str) -> OrthancServer:
    folder = Path(tempfile.mkdtemp(prefix="cxrhash-orthanc-"))
    storage = folder / "storage"
    storage.mkdir()
    http_port, dicom_port = free_port(), free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(storage, plugin, http_port, dicom_port)))
    log = folder / "orthanc.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
            preexec_fn=_die_with_parent,
        )
    server = OrthancServer(f"http://127.0.0.1:{http_port}", dicom_port, process, folder, log)
    atexit.register(server.stop)
    return server


def _wait_ready(server: OrthancServer) -> None:
    deadline = time.monotonic() + WAIT_S
    with server.session() as session:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {server.log.read_text()[-2000:]}")
            try:
                answer = session.get(f"{server.url}/plugins", timeout=2)
                if answer.ok and "dicom-web" in answer.json():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"Orthanc did not answer within {WAIT_S} s")


if __name__ == "__main__":
    found = find_orthanc()
    if found is None:
        raise SystemExit("apt-get install orthanc orthanc-dicomweb first")
    running = start_orthanc(*found)
    print(
        f"Orthanc {running.url} (DICOMweb {running.dicomweb_url}), user {running.user}, "
        f"password {running.password}; Ctrl-C stops it",
        flush=True,
    )
    try:
        running.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
