"""Shared fixtures: a small phantom dataset on disk and the location of the real data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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


@pytest.fixture
def cxr_dev() -> Path:
    """The real NIH films of ``../shared/data/cxr-dev`` (skips when absent)."""
    return shared_data("cxr-dev")
