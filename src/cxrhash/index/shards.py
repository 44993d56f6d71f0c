"""The shard files of an index: append-only packed codes, memory-mapped for reading.

Shard ``i`` is the file ``shards/NNNN.codes`` holding the raw ``uint8`` rows of ids
``i·shard_size`` … ``(i+1)·shard_size − 1``, ``code_bytes`` bytes per row, no header
(the layout and the manifest that commits it: :mod:`cxrhash.index.manifest`).

An index created with a float store also keeps ``shards/NNNN.f16`` beside each
codes file: the same rows' pre-binarisation outputs as raw little-endian
float16, ``2·bits`` bytes per row, no header, written in the same step as the
codes (``floats`` in the manifest).

Bytes beyond the committed rows (left by an interrupted append) are never read and are
overwritten by the next append. :meth:`ShardStore.stage` writes and fsyncs new rows
without committing them; :meth:`ShardStore.commit` replaces the manifest (temp file,
fsync, ``os.replace``, fsync of the directory), after which the rows exist.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cxrhash.index.durable import fsync_path, write_at, write_json_atomic
from cxrhash.index.errors import IndexCorruptError
from cxrhash.index.integrity import ranges_to_rows
from cxrhash.index.manifest import (
    FLOAT_DTYPE,
    MANIFEST_NAME,
    SHARD_DIR,
    Manifest,
    ShardEntry,
    shard_file,
)

LOG = logging.getLogger(__name__)

#: ``FLOAT_DTYPE`` and ``write_json_atomic`` are also importable from here, their former home.
__all__ = ["FLOAT_DTYPE", "ShardStore", "write_json_atomic"]


class ShardStore:
    """The committed state of an index directory: its manifest, and its codes (and float
    rows) as one read-only memory map per shard file."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        self.removed = ranges_to_rows(manifest.removed)  # the removal record as rows
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
            write_at(self.root / last.file, last.rows * width, chunk)
            floats_crc = None
            if floats is not None:
                rows = np.ascontiguousarray(floats[done:stop], dtype=FLOAT_DTYPE).reshape(-1)
                write_at(self.root / last.floats_file, last.rows * m.float_bytes, rows)
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
        if manifest.removed != self.manifest.removed:
            self.removed = ranges_to_rows(manifest.removed)
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
