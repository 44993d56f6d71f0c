"""Append-only shard files of packed codes, committed by an atomically replaced manifest.

Shard ``i`` is the file ``shards/NNNN.codes`` (``NNNN`` = ``i``, zero-padded)
holding the raw ``uint8`` rows of ids ``i·shard_size`` … ``(i+1)·shard_size − 1``,
``code_bytes`` bytes per row, no header. Every shard but the last is full.

An index created with a float store also keeps ``shards/NNNN.f16`` beside each
codes file: the same rows' pre-binarisation outputs as raw little-endian
float16, ``2·bits`` bytes per row, no header, written in the same step as the
codes (``floats`` in the manifest).

Format 4 adds the SHA-256s of the metadata, the record of removed rows
(:mod:`cxrhash.index.integrity`) and keyed pseudonyms (:mod:`cxrhash.index.pseudonyms`).
Formats 1–3 are refused with a request to re-index: they stored patient hashes with
their salt (reversible) and source names, and their metadata was unverified. Older
cxrhash versions refuse format 4 rather than serve it unchecked.

The manifest ``index.json`` is the commit point: it records per shard the
committed row count and the CRC-32 of those bytes (of the codes, and of the
floats in ``floats_crc32``). Bytes beyond the committed rows (left by an
interrupted append) are never read and are overwritten by the next append.
:meth:`ShardStore.stage` writes and fsyncs new rows without committing them;
:meth:`ShardStore.commit` replaces the manifest (temp file, fsync,
``os.replace``, fsync of the directory), after which the rows exist.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cxrhash.index.codes import code_bytes
from cxrhash.index.errors import IndexCorruptError
from cxrhash.index.integrity import MetaSeal, parse_ranges

LOG = logging.getLogger(__name__)

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


def write_json_atomic(target: Path, payload: dict[str, Any]) -> None:
    """Replace ``target`` by ``payload``: readers see the old or the new file, never a mix."""
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    fsync_path(target.parent)


def fsync_path(path: Path) -> None:
    """fsync a file or directory by path (a directory's fsync makes renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardStore:
    """The committed codes (and float rows) of an index directory, one read-only memory
    map per shard file."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        self._maps = [self._map(i) for i in range(len(manifest.shards))]
        self._float_maps = (
            [self._map(i, floats=True) for i in range(len(manifest.shards))]
            if manifest.floats
            else []
        )

    @classmethod
    def create(cls, root: Path, manifest: Manifest) -> ShardStore:
        """Write the manifest of an empty index (the last step of creating one)."""
        (root / SHARD_DIR).mkdir(exist_ok=True)
        write_json_atomic(root / MANIFEST_NAME, manifest.to_json())
        return cls(root, manifest)

    def verify(self) -> None:
        """Check every shard's committed bytes (codes and floats) against the manifest's CRC-32;
        IndexCorruptError for the first that fails."""
        problems = self.problems()
        if problems:
            raise IndexCorruptError(problems[0])

    def problems(self) -> list[str]:
        """One message per shard file whose committed bytes fail their CRC-32."""
        out = []
        for i, entry in enumerate(self.manifest.shards):
            checks: list[tuple[str, np.ndarray, int | None, str]] = [
                (entry.file, self._maps[i], entry.crc32, "codes")
            ]
            if self.manifest.floats:
                floats = self._float_maps[i]
                checks.append((entry.floats_file, floats, entry.floats_crc32, "float rows"))
            for file, rows, crc, what in checks:
                if zlib.crc32(rows.data) != crc:
                    out.append(
                        f"{self.root / file}: the {entry.rows} committed {what} fail their "
                        f"CRC-32 check in {MANIFEST_NAME} (the file was modified or is damaged)"
                    )
        return out

    def shard_codes(self, i: int) -> np.ndarray:
        """The committed rows of shard ``i`` (read-only, memory-mapped)."""
        return self._maps[i]

    def shard_floats(self, i: int) -> np.ndarray:
        """The committed float rows of shard ``i`` (read-only, memory-mapped ``<f2``)."""
        return self._float_maps[i]

    def all_codes(self) -> np.ndarray:
        """Every committed row in id order (the map itself for one shard, else a copy)."""
        return _joined(self._maps, (0, self.manifest.code_bytes), np.uint8)

    def all_floats(self) -> np.ndarray:
        """Every committed float row in id order (N×bits ``<f2``; the map itself for one shard)."""
        if not self.manifest.floats:
            raise ValueError("this index stores no float outputs")
        return _joined(self._float_maps, (0, self.manifest.bits), FLOAT_DTYPE)

    def gather(self, rows: np.ndarray, *, floats: bool = False) -> np.ndarray:
        """The codes (or float rows) of committed ids ``rows`` (any shape; −1 gives zeros).

        Returns:
            ``rows.shape + (width,)``: ``uint8`` packed codes, or ``<f2`` floats.
        """
        maps = self._float_maps if floats else self._maps
        width = self.manifest.bits if floats else self.manifest.code_bytes
        flat = np.asarray(rows, dtype=np.int64).ravel()
        if len(maps) == 1 and (len(flat) == 0 or flat.min() >= 0):  # the common case: one take
            return np.take(maps[0].view(np.ndarray), flat, axis=0).reshape(*np.shape(rows), width)
        out = np.zeros((len(flat), width), dtype=FLOAT_DTYPE if floats else np.uint8)
        size = self.manifest.shard_size
        shard = np.where(flat < 0, -1, flat // size)
        for s in np.unique(shard[shard >= 0]):
            at = np.flatnonzero(shard == s)
            out[at] = maps[s][flat[at] - s * size]
        return out.reshape(*np.shape(rows), width)

    def stage(self, codes: np.ndarray, floats: np.ndarray | None = None) -> Manifest:
        """Write ``codes`` (and their ``<f2`` float rows, for an index with a float store) after
        the committed rows and fsync them; return the manifest to commit.

        Nothing is visible until :meth:`commit`; a crash leaves only ignored bytes.
        """
        m = self.manifest
        if m.floats != (floats is not None):
            raise ValueError("float rows must be staged exactly when the index stores them")
        width, size = m.code_bytes, m.shard_size
        shards = list(m.shards)
        done, grown = 0, False
        while done < len(codes):
            if not shards or shards[-1].rows == size:
                shards.append(ShardEntry(shard_file(len(shards)), 0, 0, 0 if m.floats else None))
                grown = True
            last = shards[-1]
            stop = done + size - last.rows
            chunk = np.ascontiguousarray(codes[done:stop]).reshape(-1)
            _write_at(self.root / last.file, last.rows * width, chunk)
            floats_crc = None
            if floats is not None:
                rows = np.ascontiguousarray(floats[done:stop], dtype=FLOAT_DTYPE).reshape(-1)
                _write_at(self.root / last.floats_file, last.rows * m.float_bytes, rows)
                floats_crc = zlib.crc32(rows.data, last.floats_crc32 or 0)
            shards[-1] = replace(
                last,
                rows=last.rows + len(chunk) // width,
                crc32=zlib.crc32(chunk.data, last.crc32),
                floats_crc32=floats_crc,
            )
            done += len(chunk) // width
        if grown:  # a new shard file's directory entry must be durable too
            fsync_path(self.root / SHARD_DIR)
        return replace(m, shards=tuple(shards))

    def commit(self, manifest: Manifest) -> None:
        """Make ``manifest`` (from :meth:`stage`) the committed state, then remap grown shards."""
        write_json_atomic(self.root / MANIFEST_NAME, manifest.to_json())
        old = self.manifest.shards
        self.manifest = manifest
        for i, entry in enumerate(manifest.shards):
            if i >= len(old) or entry.rows != old[i].rows:
                codes = self._map(i)
                floats = self._map(i, floats=True) if manifest.floats else None
                if i >= len(old):
                    self._maps.append(codes)
                    if floats is not None:
                        self._float_maps.append(floats)
                else:
                    self._maps[i] = codes
                    if floats is not None:
                        self._float_maps[i] = floats

    def _map(self, i: int, *, floats: bool = False) -> np.ndarray:
        """Shard ``i``'s committed codes (or float rows), checking the file holds them."""
        entry = self.manifest.shards[i]
        path = self.root / (entry.floats_file if floats else entry.file)
        what = "float rows" if floats else "codes"
        width = self.manifest.float_bytes if floats else self.manifest.code_bytes
        try:
            size = path.stat().st_size
        except OSError as err:
            raise IndexCorruptError(
                f"{path} is missing or unreadable but {MANIFEST_NAME} records {entry.rows} "
                f"{what} in it: {err}"
            ) from err
        if size < entry.rows * width:
            raise IndexCorruptError(
                f"{path} is truncated: it holds {size} bytes, but {MANIFEST_NAME} records "
                f"{entry.rows} {what} of {width} bytes ({entry.rows * width} bytes)"
            )
        if size > entry.rows * width:
            LOG.info("%s: ignoring %d bytes of an interrupted add", path, size - entry.rows * width)
        dtype = FLOAT_DTYPE if floats else np.dtype(np.uint8)
        shape = (entry.rows, self.manifest.bits if floats else width)
        if entry.rows == 0:
            return np.zeros(shape, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def _joined(maps: list[np.ndarray], empty: tuple[int, int], dtype: Any) -> np.ndarray:
    """The rows of every shard map in id order: the map itself for one shard, else a copy."""
    if len(maps) == 1:
        return maps[0]
    if not maps:
        return np.zeros(empty, dtype=dtype)
    return np.concatenate(maps)


def _write_at(path: Path, offset: int, data: np.ndarray) -> None:
    """Write ``data`` at byte ``offset``, cut the file after it and fsync (creating the file)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < offset:
            raise IndexCorruptError(
                f"{path} holds {os.fstat(fd).st_size} bytes, fewer than the {offset} committed "
                "ones (was it truncated while the index was open?)"
            )
        view = data.data
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], offset + written)
        os.ftruncate(fd, offset + written)
        os.fsync(fd)
    finally:
        os.close(fd)


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
