"""Reading label CSVs and name lists: UTF-8 only, bounded, errors naming the file and line.

A label file is a small table of text. What else may be handed over, by mistake
or on purpose (a Latin-1 export, a binary file, a header of a million commas,
a cell of megabytes), is refused with a one-line :class:`DataFormatError`
rather than a traceback, a hang or gigabytes of memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from cxrhash.data.errors import DataFormatError

# No label CSV comes near these: NIH's rows are ~100 characters, CheXpert has 19 columns.
MAX_LINE_CHARS = 1 << 20
MAX_COLUMNS = 10_000
_COLUMNS_SHOWN = 20
_CHUNK = 1 << 16


def iter_csv(csv_path: Path, required: tuple[str, ...]) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ``("FILE line N", row)`` after checking that the ``required`` columns exist.

    Raises:
        DataFormatError: The file is missing, not UTF-8, not CSV, has a line over
            :data:`MAX_LINE_CHARS` characters, a cell over ``csv.field_size_limit()``,
            more than :data:`MAX_COLUMNS` columns, or lacks a required column.
    """
    if not csv_path.is_file():
        raise DataFormatError(f"label file {csv_path} not found")
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(_bounded_lines(handle, csv_path))
        try:
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if len(columns) > MAX_COLUMNS:
                raise DataFormatError(
                    f"{csv_path}: the header has {len(columns):,} columns; a label CSV has "
                    f"at most {MAX_COLUMNS:,} (is this the right file?)"
                )
            reader.fieldnames = columns
            missing = [c for c in required if c not in columns]
            if missing:
                raise DataFormatError(
                    f"{csv_path}: missing column(s) {missing}; expected {list(required)}, "
                    f"the file has columns {_shown(columns)}"
                )
            for row in reader:
                yield f"{csv_path} line {reader.line_num}", row
        except UnicodeDecodeError as err:
            raise DataFormatError(_not_utf8(csv_path, "a UTF-8 CSV")) from err
        except csv.Error as err:
            raise DataFormatError(
                f"{csv_path} line {reader.line_num}: cannot parse it as CSV ({err})"
            ) from err


def read_name_lines(path: Path) -> set[str]:
    """The stripped, non-empty lines of a UTF-8 list file (e.g. NIH's ``test_list.txt``).

    Raises:
        DataFormatError: The file is not UTF-8 or has a line over :data:`MAX_LINE_CHARS`.
    """
    names: set[str] = set()
    try:
        with path.open(encoding="utf-8-sig") as handle:
            names.update(line.strip() for line in _bounded_lines(handle, path) if line.strip())
    except UnicodeDecodeError as err:
        raise DataFormatError(_not_utf8(path, "a UTF-8 list of names")) from err
    return names


def _bounded_lines(handle: TextIO, path: Path) -> Iterator[str]:
    number = 0
    while line := handle.readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise DataFormatError(
                f"{path} line {number}: longer than {MAX_LINE_CHARS:,} characters; "
                "expected a line of a label file"
            )
        yield line


def _shown(columns: list[str]) -> str:
    if len(columns) <= _COLUMNS_SHOWN:
        return str(columns)
    return f"{columns[:_COLUMNS_SHOWN]} … ({len(columns):,} in all)"


def _not_utf8(path: Path, expected: str) -> str:
    """Error text locating the first byte of ``path`` that is not UTF-8."""
    line, byte = _first_non_utf8(path)
    where = f"line {line}: byte 0x{byte:02X} is" if line else "it is"
    return f"{path} {where} not UTF-8; expected {expected} (re-save the file as UTF-8)"


def _first_non_utf8(path: Path) -> tuple[int, int]:
    """``(line, byte)`` of the first byte that does not decode as UTF-8, or ``(0, 0)``."""
    line, pending = 1, b""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            data = pending + chunk
            try:
                data.decode("utf-8")
                good, pending = data, b""
            except UnicodeDecodeError as err:
                if err.reason != "unexpected end of data" or err.end != len(data):
                    return line + data.count(b"\n", 0, err.start), data[err.start]
                good, pending = data[: err.start], data[err.start :]  # a character split by a chunk
            line += good.count(b"\n")
    return (line, pending[0]) if pending else (0, 0)
