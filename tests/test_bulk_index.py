"""``cxrhash index --nproc 2``: two torchrun workers make the index one process makes, and a
worker killed mid-run costs only the films it had not committed (issue #15, item 4)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cxrhash.bulk_index import PARTS_DIR, worker_of
from cxrhash.index.store import HashIndex

pytestmark = pytest.mark.slow
UNREADABLE = 2


@pytest.fixture(scope="module")
def films(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom films in NIH layout with two of them damaged."""
    data = tmp_path_factory.mktemp("bulk") / "data"
    shutil.copytree(phantom_dir, data)
    for path in sorted((data / "images").iterdir())[:UNREADABLE]:
        path.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return data


def _index(run: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """The ``cxrhash index`` command of ``run``'s model over ``data`` into ``out``."""
    return [
        sys.executable, "-m", "cxrhash", "index", "--checkpoint", str(run / "best.pt"),
        "--data", f"nih:{data}", "--out", str(out), *extra,
    ]  # fmt: skip


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _stored(out: Path) -> dict[str, tuple[bytes, str, str | None]]:
    """Stored id → (code, findings, patient pseudonym) of every film of the index."""
    with HashIndex.open(out) as ix:
        assert ix.verify().ok
        batch = ix.stored_batch(0, ix.n_rows)
    rows = zip(batch.stored_ids, batch.codes, batch.findings, batch.patient_hashes, strict=True)
    return {s: (c.tobytes(), f, p) for s, c, f, p in rows}


def _added(output: str) -> tuple[int, int, int]:
    """(added, already indexed, unreadable) from the report line."""
    found = re.search(
        r"added (\d+) images .*?, (\d+) already indexed, (\d+) unreadable", output, re.S
    )
    assert found, output
    return int(found[1]), int(found[2]), int(found[3])


@pytest.fixture(scope="module")
def one_process(tiny_run: Path, films: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one") / "index"
    _run(_index(tiny_run, films, out))
    return out


def test_workers_share_the_films_by_a_hash_of_their_case_id() -> None:
    ids = [f"{i:08d}_000.png" for i in range(4000)]
    shares = np.bincount([worker_of(c, 3) for c in ids], minlength=3)
    assert shares.min() > 1200  # about a third each
    assert [worker_of(c, 3) for c in ids] == [worker_of(c, 3) for c in ids]  # stable
    assert {worker_of(c, 1) for c in ids} == {0}


def test_two_workers_make_the_index_one_process_makes(
    tiny_run: Path, films: Path, one_process: Path, tmp_path: Path
) -> None:
    out = tmp_path / "index"
    output = _run(_index(tiny_run, films, out, "--nproc", "2", "--batch-size", "8"))
    n = len(_stored(one_process))
    assert _added(output) == (n, 0, UNREADABLE)
    assert output.count("added ") == 1  # worker 0 reports for both
    assert _stored(out) == _stored(one_process)
    assert not (out / PARTS_DIR).exists()
    assert (out / "calibration.npz").is_file() and (out / "model.json").is_file()
    again = _run(_index(tiny_run, films, out, "--nproc", "2"))
    assert _added(again) == (0, n, UNREADABLE)  # unreadable films are tried again


def _worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank`` started under ``launcher``, if running."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if f"RANK={rank}".encode() in environ and parent != launcher:
            grand = Path(f"/proc/{parent}/stat")
            if grand.exists() and int(grand.read_text().rsplit(")", 1)[1].split()[1]) == launcher:
                return int(proc.name)
    return None


def _committed(part: Path) -> int:
    if not (part / "index.json").is_file():
        return 0
    with HashIndex.open(part, verify=False) as ix:
        return len(ix)


def test_a_worker_killed_mid_run_costs_only_its_unfinished_films(
    tiny_run: Path, films: Path, one_process: Path, tmp_path: Path
) -> None:
    out = tmp_path / "index"
    slow = ("--nproc", "2", "--batch-size", "1", "--commit-every", "1")
    proc = subprocess.Popen(_index(tiny_run, films, out, *slow), stdout=subprocess.PIPE, text=True)
    part = out / PARTS_DIR / "worker-0001"
    deadline = time.monotonic() + 300
    try:
        while _committed(part) < 5 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        victim = _worker_pid(proc.pid, 1)
        assert victim is not None, "worker 1 not found"
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=120) != 0  # torchrun gives up (no --max-restarts)
    finally:
        proc.kill()
        proc.wait()
    parts = sorted((out / PARTS_DIR).iterdir())
    done = sum(_committed(p) for p in parts)
    n = len(_stored(one_process))
    assert 5 <= done < n, f"killed after {done} of {n} films"
    output = _run(_index(tiny_run, films, out, "--nproc", "2"))
    added, already, unreadable = _added(output)
    assert (added, already) == (n - done, done), output  # nothing encoded twice
    assert unreadable == UNREADABLE
    assert _stored(out) == _stored(one_process)  # nothing lost


def test_one_process_merges_the_parts_an_interrupted_run_left(
    tiny_run: Path, films: Path, one_process: Path, tmp_path: Path
) -> None:
    from cxrhash.data.readers import open_dataset
    from cxrhash.retrieve import build_index

    out = tmp_path / "index"
    dataset = open_dataset(f"nih:{films}", 32)
    share = [[i for i, c in enumerate(dataset.case_ids) if worker_of(c, 2) == r] for r in (0, 1)]
    build_index(tiny_run / "best.pt", dataset.subset(share[0]), out, progress=False)
    build_index(tiny_run / "best.pt", dataset.subset(share[1]), out / PARTS_DIR / "worker-0001",
                progress=False)  # fmt: skip
    output = _run(_index(tiny_run, films, out))  # one process, as a killed run left it
    assert "merged" in output
    assert _added(output)[:2] == (0, len(_stored(one_process)))
    assert _stored(out) == _stored(one_process)
    assert not (out / PARTS_DIR).exists()


def test_workers_make_their_parts_as_the_index_was_made(
    tiny_run: Path, films: Path, one_process: Path, tmp_path: Path
) -> None:
    """An index created with a float store is extended by workers not told so: every part
    keeps floats too, and the merged films have theirs."""
    from cxrhash.data.readers import open_dataset
    from cxrhash.retrieve import build_index

    out = tmp_path / "index"
    dataset = open_dataset(f"nih:{films}", 32)
    build_index(tiny_run / "best.pt", dataset.subset(range(10, 20)), out, store_floats=True,
                progress=False)  # fmt: skip
    _run(_index(tiny_run, films, out, "--nproc", "2"))
    assert _stored(out) == _stored(one_process)
    with HashIndex.open(out) as ix:
        floats = ix.stored_batch(0, ix.n_rows).floats
        assert ix.stores_floats and floats is not None and len(floats) == len(ix)
        assert np.array_equal(np.packbits(floats >= 0, axis=1), ix.codes)
