"""Reading rows from JSONL, CSV, Parquet, or a folder of text and markdown files.

Each row comes with its origin (file and line, row, or file name). A row that cannot be read at all (broken
JSON, a line or text file that is not UTF-8, a CSV row with the wrong number of cells) comes back with the
reason instead of fields, so that it is quarantined, not lost. A CSV or Parquet file that cannot be parsed
at all is refused as a whole, with the reason.

Input is bounded at this edge, each bound a reason on the one row that crosses it: a JSONL line's bytes, its
nesting depth and number sizes; a folder's file count and each file's size. A folder is read without leaving
it: a symbolic link that points outside it, or to a folder, is quarantined, not followed.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from reverie.errors import ReverieError

FORMATS = (".jsonl", ".csv", ".parquet", "a folder of .txt / .md files")
TEXT_SUFFIXES = (".txt", ".md")
MAX_LINE_BYTES = 1 << 20  # one JSONL row
MAX_DEPTH = 32  # objects and arrays nested in one row
MAX_FILE_BYTES = 1 << 20  # one text file of a folder
MAX_FILES = 10_000  # text files in one folder
SHOWN_RAW_CHARS = 200  # of a row too large or too deep to keep whole in the quarantine


@dataclass
class RawRow:
    origin: str
    fields: dict[str, Any] | None  # None when the row could not be read
    error: str = ""
    raw: Any = None
    position: int = 0  # where the row lies in its input (a line, row or file number): shards merge back by it


Wanted = Callable[[int], bool]
"""Which positions of an input to read: one shard's (the others are skipped before they are parsed)."""


def every_row(position: int) -> bool:
    return True


def read_rows(path: Path, wanted: Wanted = every_row) -> Iterator[RawRow]:
    """The rows of a file or folder, in order; the format is chosen by the file's suffix. With `wanted`, only
    the rows at those positions."""
    if path.is_dir():
        yield from _folder(path, wanted)
    elif not path.is_file():
        raise ReverieError(f"{path} does not exist")
    elif path.suffix == ".jsonl":
        yield from _jsonl(path, wanted)
    elif path.suffix == ".csv":
        yield from _csv(path, wanted)
    elif path.suffix == ".parquet":
        yield from _parquet(path, wanted)
    else:
        raise ReverieError(f"{path}: unsupported format {path.suffix or '(none)'}; use {', '.join(FORMATS)}")


def _jsonl(path: Path, wanted: Wanted) -> Iterator[RawRow]:
    with path.open("rb") as handle:
        number = 0
        while line := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            origin = f"{path}:{number}"
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                size = len(line) + _skip_rest_of_line(handle)
                if wanted(number):
                    yield RawRow(origin, None, f"line of {size} bytes is over the limit of {MAX_LINE_BYTES}",
                                 _shown(line), position=number)
                continue
            if line.strip() and wanted(number):
                row = _json_row(origin, line)
                row.position = number
                yield row


def _json_row(origin: str, line: bytes) -> RawRow:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return RawRow(origin, None, "not UTF-8 text", line.decode("utf-8", "replace"))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return RawRow(origin, None, f"not valid JSON: {exc.msg} (column {exc.colno})", text.rstrip())
    except RecursionError:
        return RawRow(origin, None, f"nested deeper than the limit of {MAX_DEPTH}", _shown(line))
    except ValueError as exc:  # an integer of more digits than Python converts
        return RawRow(origin, None, f"not a usable JSON row: {exc}", _shown(line))
    if not isinstance(value, dict):
        return RawRow(origin, None, f"expected a JSON object, got {type(value).__name__}", _shown(line))
    if _nesting(value) > MAX_DEPTH:
        return RawRow(origin, None, f"nested deeper than the limit of {MAX_DEPTH}", _shown(line))
    return RawRow(origin, value, raw=value)


def _nesting(value: Any) -> int:
    """Depth of nested objects and arrays, counted without recursion and only as far as one past the limit."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_DEPTH:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _skip_rest_of_line(handle: BinaryIO) -> int:
    skipped = 0
    while chunk := handle.readline(MAX_LINE_BYTES):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _shown(line: bytes) -> str:
    text = line[: SHOWN_RAW_CHARS * 4].decode("utf-8", "replace").rstrip()
    return text[:SHOWN_RAW_CHARS] + (" ..." if len(line) > SHOWN_RAW_CHARS else "")


def _csv(path: Path, wanted: Wanted) -> Iterator[RawRow]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                line = reader.line_num
                if not wanted(line):
                    continue
                origin = f"{path}:{line}"
                if None in row:  # more cells than the header names
                    yield RawRow(origin, None, f"{len(row[None])} cell(s) more than the header has", row, line)
                elif any(value is None for value in row.values()):
                    yield RawRow(origin, None, "fewer cells than the header has", row, line)
                else:
                    yield RawRow(origin, {k: v for k, v in row.items() if v != ""}, raw=row, position=line)
    except UnicodeDecodeError:
        raise ReverieError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise ReverieError(f"{path}: not a readable CSV file ({exc})") from None


def _parquet(path: Path, wanted: Wanted) -> Iterator[RawRow]:
    """Row groups are read one at a time, so a file larger than memory streams."""
    import pyarrow.parquet as pq
    from pyarrow import ArrowException

    try:
        table = pq.ParquetFile(path)
        number = 0
        for group in range(table.num_row_groups):
            for row in table.read_row_group(group).to_pylist():
                if wanted(number):
                    yield RawRow(f"{path}#row{number}", {k: v for k, v in row.items() if v is not None}, raw=row,
                                 position=number)
                number += 1
    except (ArrowException, OSError) as exc:
        raise ReverieError(f"{path}: not a readable Parquet file ({exc})") from None


def folder_files(path: Path) -> tuple[list[Path], list[RawRow]]:
    """The text files a folder ingest reads, in order, and a row for each symbolic link it does not follow.
    Nothing outside the folder is read; a folder of more than MAX_FILES text files is refused whole."""
    root = path.resolve()
    files: list[Path] = []
    refused: list[RawRow] = []
    for folder, subfolders, names in os.walk(path):  # os.walk does not descend into linked folders
        here = Path(folder)
        for name in sorted(subfolders):
            if (here / name).is_symlink():
                refused.append(RawRow(str(here / name), None, "symbolic link to a folder: not followed"))
        for name in sorted(names):
            file = here / name
            if file.suffix not in TEXT_SUFFIXES:
                continue
            if file.is_symlink() and not file.resolve().is_relative_to(root):
                refused.append(RawRow(str(file), None, f"symbolic link to {file.resolve()}, outside {path}: "
                                      "not followed"))
            elif file.is_file():
                files.append(file)
    if len(files) > MAX_FILES:
        raise ReverieError(f"{path}: {len(files)} text files, over the limit of {MAX_FILES} per ingest; "
                           "ingest its subfolders one at a time")
    return sorted(files), refused


def _folder(path: Path, wanted: Wanted) -> Iterator[RawRow]:
    files, refused = folder_files(path)
    for position, row in enumerate(refused):
        if wanted(position):
            row.position = position
            yield row
    for position, file in enumerate(files, start=len(refused)):
        if not wanted(position):
            continue
        origin = str(file)
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            yield RawRow(origin, None, f"file of {size} bytes is over the limit of {MAX_FILE_BYTES}", position=position)
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            yield RawRow(origin, None, "not UTF-8 text", position=position)
            continue
        yield RawRow(origin, {"text": text, "meta": {"file": str(file.relative_to(path))}}, position=position)
