"""Reading rows from JSONL, CSV, Parquet, or a folder of text and markdown files.

Each row comes with its origin (file and line, row, or file name). A row that cannot be read at all (broken
JSON, a line or text file that is not UTF-8, a CSV row with the wrong number of cells) comes back with the
reason instead of fields, so that it is quarantined, not lost. A CSV or Parquet file that cannot be parsed
at all is refused as a whole, with the reason.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from reverie.errors import ReverieError

FORMATS = (".jsonl", ".csv", ".parquet", "a folder of .txt / .md files")
TEXT_SUFFIXES = (".txt", ".md")


@dataclass
class RawRow:
    origin: str
    fields: dict[str, Any] | None  # None when the row could not be read
    error: str = ""
    raw: Any = None


def read_rows(path: Path) -> Iterator[RawRow]:
    """The rows of a file or folder, in order; the format is chosen by the file's suffix."""
    if path.is_dir():
        yield from _folder(path)
    elif not path.is_file():
        raise ReverieError(f"{path} does not exist")
    elif path.suffix == ".jsonl":
        yield from _jsonl(path)
    elif path.suffix == ".csv":
        yield from _csv(path)
    elif path.suffix == ".parquet":
        yield from _parquet(path)
    else:
        raise ReverieError(f"{path}: unsupported format {path.suffix or '(none)'}; use {', '.join(FORMATS)}")


def _jsonl(path: Path) -> Iterator[RawRow]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            origin = f"{path}:{number}"
            if not line.strip():
                continue
            try:
                value = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                yield RawRow(origin, None, "not UTF-8 text", line.decode("utf-8", "replace"))
                continue
            except json.JSONDecodeError as exc:
                yield RawRow(origin, None, f"not valid JSON: {exc.msg} (column {exc.colno})", line.decode().rstrip())
                continue
            if not isinstance(value, dict):
                yield RawRow(origin, None, f"expected a JSON object, got {type(value).__name__}", value)
            else:
                yield RawRow(origin, value, raw=value)


def _csv(path: Path) -> Iterator[RawRow]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                origin = f"{path}:{reader.line_num}"
                if None in row:  # more cells than the header names
                    yield RawRow(origin, None, f"{len(row[None])} cell(s) more than the header has", row)
                elif any(value is None for value in row.values()):
                    yield RawRow(origin, None, "fewer cells than the header has", row)
                else:
                    yield RawRow(origin, {k: v for k, v in row.items() if v != ""}, raw=row)
    except UnicodeDecodeError:
        raise ReverieError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise ReverieError(f"{path}: not a readable CSV file ({exc})") from None


def _parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq
    from pyarrow import ArrowException

    try:
        rows = pq.read_table(path).to_pylist()
    except (ArrowException, OSError) as exc:
        raise ReverieError(f"{path}: not a readable Parquet file ({exc})") from None
    for number, row in enumerate(rows):
        yield RawRow(f"{path}#row{number}", {k: v for k, v in row.items() if v is not None}, raw=row)


def _folder(path: Path) -> Iterator[RawRow]:
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES):
        origin = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            yield RawRow(origin, None, "not UTF-8 text")
            continue
        yield RawRow(origin, {"text": text, "meta": {"file": str(file.relative_to(path))}}, raw=None)
