"""The manifest ``index.json``: the committed state of an index, and its commit point.

It records the format version, bits, model id, pseudonym key id, shard size, search
backend and parameters, and per shard the committed row count and the CRC-32 of those
bytes (of the codes, and of the floats in ``floats_crc32``), the SHA-256s of the
metadata (:mod:`cxrhash.index.integrity`) and the removed rows. Shard ``i`` is the file
``shards/NNNN.codes`` (``NNNN`` = ``i``, zero-padded) holding ids
``i·shard_size`` … ``(i+1)·shard_size − 1``: every shard but the last is full.

Format 4 adds the SHA-256s of the metadata, the record of removed rows and keyed
pseudonyms (:mod:`cxrhash.index.pseudonyms`). Formats 1–3 are refused with a request to
re-index: they stored patient hashes with their salt (reversible) and source names, and
their metadata was unverified. Older cxrhash versions refuse format 4 rather than serve
it unchecked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrhash.index.codes import code_bytes
from cxrhash.index.errors import IndexCorruptError
from cxrhash.index.integrity import MetaSeal, parse_ranges

FORMAT_VERSION = 4  # metadata checksums, the removal record, keyed pseudonyms
FLOAT_DTYPE = np.dtype("<f2")
FLOAT_SUFFIX = ".f16"
MANIFEST_NAME = "index.json"
SHARD_DIR = "shards"
DEFAULT_SHARD_SIZE = 1 << 22


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest records it: file (relative to the index), rows, CRC-32
    of the codes and, with a float store, of the float rows."""

    file: str
    rows: int
    crc32: int
    floats_crc32: int | None = None

    @property
    def floats_file(self) -> str:
        """The float file of this shard, relative to the index (``NNNN.f16``)."""
        return str(Path(self.file).with_suffix(FLOAT_SUFFIX))

    def to_json(self) -> dict[str, Any]:
        """The shard's entry in ``index.json`` (no float CRC without a float store)."""
        out: dict[str, Any] = {"file": self.file, "rows": self.rows, "crc32": self.crc32}
        if self.floats_crc32 is not None:
            out["floats_crc32"] = self.floats_crc32
        return out


@dataclass(frozen=True)
class Manifest:
    """The committed state of an index (the content of ``index.json``)."""

    bits: int
    model_id: str
    created: str
    key_id: str  # the pseudonym key's public id (cxrhash.index.pseudonyms)
    shard_size: int
    backend: str
    backend_params: dict[str, Any]
    meta: MetaSeal  # the metadata SHA-256s (cxrhash.index.integrity)
    removed: tuple[tuple[int, int], ...] = ()  # removed rows as [lo, hi) ranges
    shards: tuple[ShardEntry, ...] = ()
    floats: bool = False  # a float16 store of the pre-binarisation outputs
    source_names: bool = False  # case ids and source paths kept as given (opt-in)

    @property
    def code_bytes(self) -> int:
        """Bytes per packed code."""
        return code_bytes(self.bits)

    @property
    def float_bytes(self) -> int:
        """Bytes per row of the float store (2·bits; 0 without one)."""
        return FLOAT_DTYPE.itemsize * self.bits if self.floats else 0

    @property
    def count(self) -> int:
        """Committed rows (ids ``0 … count − 1``), removed ones included."""
        return sum(s.rows for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``index.json``."""
        floats = {"dtype": "float16", "row_bytes": self.float_bytes} if self.floats else None
        return {
            "format_version": FORMAT_VERSION,
            "bits": self.bits,
            "code_bytes": self.code_bytes,
            "model_id": self.model_id,
            "created": self.created,
            "pseudonyms": {"key_id": self.key_id, "source_names": self.source_names},
            "shard_size": self.shard_size,
            "backend": {"name": self.backend, "params": self.backend_params},
            "count": self.count,
            "shards": [s.to_json() for s in self.shards],
            **({"floats": floats} if floats else {}),
            "metadata": self.meta.to_json(),
            "removed": [list(r) for r in self.removed],
        }

    @classmethod
    def from_json(cls, data: Any, source: Path) -> Manifest:
        """Parse and check ``index.json``'s content; IndexCorruptError names ``source``."""
        if not isinstance(data, dict):
            raise IndexCorruptError(f"{source} does not hold a JSON object")
        version = data.get("format_version")
        if version in (1, 2, 3):
            raise IndexCorruptError(
                f"{source} is a format-{version} index from an older cxrhash, which stored "
                "salted patient hashes (reversible) and source names, with unverified "
                "metadata; re-index the images into a new directory"
            )
        if version != FORMAT_VERSION:
            raise IndexCorruptError(
                f"{source} has format version {version!r}, this cxrhash reads {FORMAT_VERSION}"
            )
        floats = "floats" in data
        required = ("bits", "code_bytes", "model_id", "created", "pseudonyms", "shard_size")
        missing = [
            key
            for key in (*required, "backend", "count", "shards", "metadata", "removed")
            if key not in data
        ]
        if missing:
            raise IndexCorruptError(f"{source} lacks the field(s) {', '.join(missing)}")
        try:
            shards = tuple(
                ShardEntry(
                    str(s["file"]),
                    _count(s["rows"]),
                    _count(s["crc32"]),
                    _count(s["floats_crc32"]) if floats else None,
                )
                for s in data["shards"]
            )
            count = sum(s.rows for s in shards)
            manifest = cls(
                bits=_positive(data["bits"], "bits"),
                model_id=str(data["model_id"]),
                created=str(data["created"]),
                key_id=str(data["pseudonyms"]["key_id"]),
                shard_size=_positive(data["shard_size"], "shard_size"),
                backend=str(data["backend"]["name"]),
                backend_params=dict(data["backend"]["params"]),
                meta=MetaSeal.from_json(data["metadata"], count),
                removed=parse_ranges(data["removed"], count),
                shards=shards,
                floats=floats,
                source_names=_flag(data["pseudonyms"]["source_names"], "source_names"),
            )
            if floats and data["floats"] != {"dtype": "float16", "row_bytes": manifest.float_bytes}:
                raise ValueError(
                    f"floats {data['floats']!r} are not {manifest.bits} float16 per row"
                )
        except (TypeError, KeyError, ValueError) as err:
            raise IndexCorruptError(f"{source} has a malformed field: {err}") from err
        if data["code_bytes"] != manifest.code_bytes:
            raise IndexCorruptError(
                f"{source}: {manifest.bits} bits need {manifest.code_bytes} bytes per code, "
                f"not {data['code_bytes']}"
            )
        expected = shard_layout(manifest.count, manifest.shard_size)
        recorded = [(s.file, s.rows) for s in manifest.shards]
        if data["count"] != manifest.count or recorded != expected:
            raise IndexCorruptError(
                f"{source}: shards {recorded} and count {data['count']} do not form the id "
                f"ranges of {manifest.count} rows in shards of {manifest.shard_size}"
            )
        return manifest


def shard_file(i: int) -> str:
    """The path of shard ``i`` relative to the index directory."""
    return f"{SHARD_DIR}/{i:04d}.codes"


def shard_layout(count: int, shard_size: int) -> list[tuple[str, int]]:
    """``(file, rows)`` of every shard holding ``count`` rows: all full but the last."""
    n_shards = -(-count // shard_size)
    return [(shard_file(i), min(shard_size, count - i * shard_size)) for i in range(n_shards)]


def read_manifest(path: Path) -> Manifest:
    """Read and check ``index.json``; FileNotFoundError if absent, IndexCorruptError if bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as err:
        raise IndexCorruptError(f"{path} is not readable: {err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise IndexCorruptError(f"{path} is not valid JSON (truncated or corrupt?): {err}") from err
    return Manifest.from_json(data, path)


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value
