"""Shared by the index tests: run an index writer in a child process and SIGKILL it mid-add."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


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
