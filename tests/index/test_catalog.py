"""Backends describe themselves: the catalog's shard backends, help texts and docs table."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from cxrhash.index.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    NumpyBackend,
    backend_help,
    backend_names,
    backend_params_help,
    backend_table,
    check_shard_backend,
)
from cxrhash.index.backends.base import ServerBackend
from cxrhash.index.backends.catalog import default_params
from cxrhash.index.backends.milvus_client import MilvusNotInstalledError
from cxrhash.index.codes import hamming_rank, pack_codes
from cxrhash.index.store import HashIndex

README = Path(__file__).resolve().parents[2] / "README.md"


class ToyBackend(NumpyBackend):
    """A backend added by one class: the catalog must pick it up without another edit."""

    name = "toy"
    exact = True
    summary = "a toy for the catalog tests"

    def __init__(self, bits: int, *, spin: int = 3) -> None:
        super().__init__(bits)
        self.spin = spin

    @property
    def params(self) -> dict[str, int]:
        return {"spin": self.spin}


class ServerToy(ToyBackend):
    name = "server-toy"
    exact = False
    serves_shard = False
    needs_server = True
    summary = "a toy that lives in a server"


@pytest.fixture
def toys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the toy backends for one test only."""
    monkeypatch.setitem(BACKENDS._items, "toy", ToyBackend)
    monkeypatch.setitem(BACKENDS._items, "server-toy", ServerToy)


@pytest.mark.parametrize("name", BACKENDS.names())
def test_every_backend_describes_itself(name: str) -> None:
    cls = BACKENDS.get(name)
    assert cls.name == name
    assert all(isinstance(getattr(cls, a), bool) for a in ("exact", "serves_shard", "needs_server"))
    if cls.serves_shard and cls.needs_server:  # a mirror of the shard's codes in a server
        assert issubclass(cls, ServerBackend) and cls.required_params
    assert cls.summary and "\n" not in cls.summary and "|" not in cls.summary


def test_names_are_grouped_default_exact_approximate_server() -> None:
    assert backend_names()[0] == DEFAULT_BACKEND
    assert backend_names(serves_shard=True) == [
        "flat",
        "distinct",
        "numpy",
        "hnsw",
        "ivf",
        "multihash",
        "milvus",
    ]
    assert backend_names(exact=True) == ["flat", "distinct", "numpy", "milvus"]
    assert backend_names(exact=False) == ["hnsw", "ivf", "multihash"]
    assert backend_names(serves_shard=False) == []
    assert sorted(backend_names()) == BACKENDS.names()


def test_check_shard_backend_fills_defaults_and_refuses_what_cannot_serve() -> None:
    assert check_shard_backend("distinct", 64, None) == {"probe_radius": 2, "probe_share": 0.02}
    assert check_shard_backend("hnsw", 64, {"m": 8})["m"] == 8
    listed = "choose one of flat, distinct, numpy, hnsw, ivf, multihash, milvus$"
    with pytest.raises(ValueError, match=f"backend 'annoy' cannot serve.*{listed}"):
        check_shard_backend("annoy", 64, None)
    with pytest.raises(ValueError, match="bad parameters for the flat backend"):
        check_shard_backend("flat", 64, {"nlist": 4})


def test_milvus_parameters_are_checked_without_reaching_milvus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    full = check_shard_backend("milvus", 64, {"uri": "sub/codes.db", "slack": 4})
    assert full == {
        "uri": str(tmp_path / "sub" / "codes.db"),
        "collection": "cxrhash",
        "slack": 4,
        "max_limit": 16384,
        "timeout": 10.0,
    }
    assert not any(tmp_path.iterdir())  # no Lite file, no folder: nothing was reached
    for params, message in [
        ({}, "milvus backend needs a uri: a Milvus Lite file"),
        ({"uri": "codes.sqlite"}, "milvus uri must be a Milvus Lite file ending in .db"),
        ({"uri": "a.db", "collection": "two words"}, "collection must be a name of letters"),
        ({"uri": "a.db", "timeout": 0}, "timeout must be a positive number"),
        ({"uri": "a.db", "create": False}, "bad parameters.*create is not a parameter"),
        ({"uri": "a.db", "nlist": 4}, "bad parameters for the milvus backend"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_shard_backend("milvus", 64, params)
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if the extra were not installed
    with pytest.raises(MilvusNotInstalledError, match=r'pip install "cxrhash\[milvus\]"'):
        check_shard_backend("milvus", 64, {"uri": "a.db"})


def test_backend_help_names_each_shard_backend_with_its_kind() -> None:
    text = backend_help()
    described = dict(re.findall(r"(?:: |; )([a-z]+) \((default, exact|exact|approximate):", text))
    assert list(described) == backend_names(serves_shard=True)
    for name, kind in described.items():
        assert kind.endswith("exact") == BACKENDS.get(name).exact
        assert kind.startswith("default") == (name == DEFAULT_BACKEND)
    assert "`" not in text


@pytest.mark.parametrize("name", backend_names(serves_shard=True))
def test_backend_params_help_shows_the_real_defaults(name: str, tmp_path: Path) -> None:
    shown = re.search(rf"(?:: |; ){name}: ([^;]*?)(?:;|\.$)", backend_params_help())
    cls = BACKENDS.get(name)
    params = default_params(cls)
    if not params:
        assert shown is None
        return
    assert shown is not None
    pairs = [kv.split("=", 1) for kv in shown.group(1).split(", ")]
    assert [k for k, v in pairs if v == "… (required)"] == list(cls.required_params)
    given = {k: json.loads(v) for k, v in pairs if k not in cls.required_params}
    assert given == params
    needed = {key: str(tmp_path / "x.db") for key in cls.required_params}
    assert cls.check_params(64, {**given, **needed}) == cls.check_params(64, needed)


def test_readme_table_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("| backend | exact? |")
    end = text.index("\n\n", start) + 1
    assert text[start:end] == backend_table(), (
        "README.md's table of backends differs from backend_table(); paste "
        "`python -c 'from cxrhash.index.backends import backend_table; print(backend_table())'`"
    )


def test_a_new_backend_class_is_listed_everywhere_and_serves_an_index(
    toys: None, tmp_path: Path
) -> None:
    assert backend_names(exact=True) == ["flat", "distinct", "numpy", "toy", "milvus"]
    assert backend_names(serves_shard=True)[-1] == "milvus"
    assert "toy" in backend_names(serves_shard=True) and "server-toy" not in backend_help()
    assert "toy (exact: a toy for the catalog tests)" in backend_help()
    assert "toy: spin=3" in backend_params_help()
    rows = backend_table().splitlines()
    assert "| `toy` | yes, ties in database order | yes | a toy for the catalog tests |" in rows
    assert rows[-1] == (
        "| `server-toy` | no (recall reported) | no: keeps its codes in a server | "
        "a toy that lives in a server |"
    )
    with pytest.raises(ValueError, match="cannot serve.*toy"):
        HashIndex.create(tmp_path / "no", 16, "m", backend="server-toy")

    codes = pack_codes(np.random.default_rng(0).integers(0, 2, size=(50, 16)))
    index = HashIndex.create(
        tmp_path / "idx", 16, "m", backend="toy", shard_size=20, source_names=True
    )
    assert index.backend_params == {"spin": 3}
    index.add(codes, [f"c{i}" for i in range(50)], ["x"] * 50)
    np.testing.assert_array_equal(
        index.search_packed(codes[:5], 7)[0], hamming_rank(codes[:5], codes, 7)[0]
    )
