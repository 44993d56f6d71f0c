"""Shared fixtures: a small phantom dataset on disk, the location of the real data, and a harness
that SIGKILLs an index writer mid-add.

This is the suite's only ``conftest.py``: test modules import helpers from it by name
(``from conftest import ...``), which a second ``conftest`` module in a sub-folder would shadow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SRC = str(REPO / "src")

# The suite's pseudonym key (cxrhash.index.pseudonyms): a file of this session, never the
# user's own key in ~/.config; child processes inherit it.
os.environ.pop("CXRHASH_PSEUDONYM_KEY", None)
os.environ["CXRHASH_PSEUDONYM_KEY_FILE"] = str(
    Path(tempfile.mkdtemp(prefix="cxrhash-test-key-")) / "pseudonym.key"
)


def shared_data(name: str) -> Path:
    """Path of a folder in ``../shared/data``, or skip the test with a message."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} not found (it lives outside the repo in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 phantom radiographs at 64 px in NIH format (written once per test session)."""
    from cxrhash.data.phantom import write_phantom_dataset

    out = tmp_path_factory.mktemp("phantom")
    return write_phantom_dataset(out / "data", 120, 64, seed=3)


@pytest.fixture(scope="session")
def tiny_run(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of the ``test`` profile trained one epoch on :func:`phantom_dir`
    (trained once per session; the server's tests share it). Do not write into it."""
    from cxrhash.config import make_config
    from cxrhash.training.trainer import train

    run = tmp_path_factory.mktemp("tiny") / "run"
    train(make_config("test", data=f"phantom:{phantom_dir}", epochs=1), run, progress=False)
    return run


def build_phantom_index(run: Path, phantom_dir: Path, out: Path, **options: object) -> Path:
    """An index at ``out`` of every phantom film, encoded by ``run``'s best checkpoint."""
    from cxrhash.data.readers import open_dataset
    from cxrhash.retrieve import build_index

    dataset = open_dataset(f"phantom:{phantom_dir}", 32)
    build_index(run / "best.pt", dataset, out, progress=False, **options)  # type: ignore[arg-type]
    return out


@pytest.fixture
def cxr_dev() -> Path:
    """The real NIH films of ``../shared/data/cxr-dev`` (skips when absent)."""
    return shared_data("cxr-dev")


def dx_dataset(syntax: str) -> Dataset:
    """An empty DX dataset with file meta in transfer syntax ``syntax`` (no pixels yet)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    return ds


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    bits: int = 12,
    photometric: str = "MONOCHROME2",
    signed: bool = False,
    **elements: object,
) -> Path:
    """Write a tiny uncompressed DICOM; ``pixels`` is H×W, F×H×W or H×W×3."""
    ds = dx_dataset(ExplicitVRLittleEndian)
    colour = photometric in ("RGB", "YBR_FULL")
    frames = pixels.ndim == 3 and not colour
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    if frames:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    for key, value in elements.items():
        setattr(ds, key, value)
    dtype = {8: np.uint8, 16: np.int16 if signed else np.uint16}[ds.BitsAllocated]
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def subprocess_env() -> dict[str, str]:
    """The environment of a child Python that imports this checkout's ``cxrhash``."""
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def kill_writer_mid_add(script: str, path: Path) -> None:
    """Run ``script`` (given the index folder as argv[1]) until its first batch is committed,
    wait a random 0–0.6 s more, then SIGKILL it while it is still writing."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], env=subprocess_env(), stderr=subprocess.PIPE
    )
    manifest = path / "index.json"
    deadline = time.monotonic() + 120
    while json.loads(manifest.read_text())["count"] == 0:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "no batch committed within 120 s"
        time.sleep(0.005)
    time.sleep(np.random.default_rng().uniform(0.0, 0.6))
    assert proc.poll() is None, "the writer finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def kill_writer() -> Callable[[str, Path], None]:
    """:func:`kill_writer_mid_add`, as a fixture."""
    return kill_writer_mid_add


@pytest.fixture
def default_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test starts from the default pixel limit and leaves no override behind."""
    from PIL import Image

    from cxrhash.data.limits import ENV_VAR, set_max_pixels

    monkeypatch.delenv(ENV_VAR, raising=False)
    # load_image points Pillow's global at the limit; restore it for later tests.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    set_max_pixels(None)
    yield
    set_max_pixels(None)


def stored_text(path: Path) -> bytes:
    """What a file of an index could hold of a text, for the tests that grep an index for
    patient data: its bytes, except the numeric arrays of an ``.npz`` (the closeness
    sample), whose float bytes could match a three-letter secret by chance; the npz's text
    arrays are kept."""
    if path.suffix != ".npz":
        return path.read_bytes()
    with np.load(path, allow_pickle=False) as arrays:
        texts = [arrays[k] for k in arrays.files if arrays[k].dtype.kind in "SUO"]
    return b"".join(str(t.tolist()).encode() for t in texts)


@contextmanager
def serving(app: Any, wait_s: float = 60) -> Iterator[str]:
    """``app`` under uvicorn in a thread, on a loopback socket bound here (no race); its
    base URL while the block runs."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + wait_s
    try:
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(wait_s)
        sock.close()
