"""JSON Lines, the one way reverie writes and reads a file line by line.

Lines end at `\\n` and nowhere else. `str.splitlines()` also splits on U+2028, U+2029, U+0085 and a few control
characters, and pydantic's `model_dump_json` writes the first three raw, so one such character in a record
once made a whole file unreadable. Here they (and lone surrogates, which UTF-8 cannot carry) are written as
`\\uXXXX` escapes, so a line holds no separator that any reader splits on, and any Python string round-trips.

Appends are one `write` of a whole line on a file opened for appending, fsynced when the file is a journal,
so a kill leaves at most a torn last line, which readers report as such. A line that does not parse is
reported with its file and line number: `read_jsonl` raises (the project's own, content-addressed files
should never hold one), `scan_jsonl` returns the good rows and the bad lines, for files a live process
appends to (the feedback inbox, journals), so one bad line does not stop the cycle.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from pydantic import BaseModel, ValidationError

from reverie.errors import ReverieError
from reverie.validation import brief

T = TypeVar("T")

# Raw, these end a line for str.splitlines() (U+0085, U+2028, U+2029) or cannot be encoded as UTF-8 (surrogates);
# JSON escapes control characters itself.
_UNSAFE = re.compile("[\u0085\u2028\u2029\ud800-\udfff]")
SHOWN_BAD_LINES = 5


@dataclass(frozen=True)
class BadLine:
    path: Path
    number: int
    reason: str
    torn: bool = False  # the last line, without its newline: an append that a kill interrupted

    def __str__(self) -> str:
        return f"{self.path}:{self.number}: {self.reason}"


def dumps(value: Any) -> str:
    """One JSON line (no newline) for a pydantic model, a dataclass or a JSON-able value."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    text = json.dumps(value, ensure_ascii=False)
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def jsonl_text(rows: Iterable[Any]) -> str:
    """Every row, one per line: the text of a JSONL file."""
    return "".join(dumps(row) + "\n" for row in rows)


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """Write a JSONL file in one go (into a staging folder, or atomically with `Workspace.write_text_atomic`)."""
    path.write_text(jsonl_text(rows), encoding="utf-8")


def append_jsonl(path: Path, row: Any, durable: bool = True) -> None:
    """Append one row as one write; with `durable`, it is on disk when this returns (a journal, an inbox)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (dumps(row) + "\n").encode("utf-8")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(descriptor, line)
        while written < len(line):  # a short write (rare: a full disk, a signal) must not leave half a line
            written += os.write(descriptor, line[written:])
        if durable:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def scan_jsonl(path: Path, parse: Callable[[Any], T] = lambda value: value) -> tuple[list[T], list[BadLine]]:
    """(rows, bad lines) of a JSONL file; `parse` turns each decoded value into a row (a pydantic model's
    `model_validate`, say) and may raise ValueError or ValidationError for a line that is not a row."""
    rows: list[T] = []
    bad: list[BadLine] = []
    if not path.is_file():
        return rows, bad
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""  # after the last newline: empty, or a line an interrupted append tore
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(parse(json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError:
            bad.append(BadLine(path, number, "not UTF-8 text"))
        except ValidationError as exc:
            bad.append(BadLine(path, number, brief(exc)))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            bad.append(BadLine(path, number, f"not a valid row: {exc}"))
    if torn.strip():
        bad.append(BadLine(path, len(lines) + 1, "incomplete last line (an interrupted write)", torn=True))
    return rows, bad


def read_jsonl(path: Path, parse: Callable[[Any], T] = lambda value: value) -> list[T]:
    """Every row of a JSONL file that must be whole; a bad line is an error naming the file and line."""
    rows, bad = scan_jsonl(path, parse)
    if bad:
        raise CorruptFile(bad)
    return rows


def iter_jsonl(path: Path, parse: Callable[[Any], T] = lambda value: value) -> Iterator[T]:
    """The rows of a JSONL file that must be whole, one line in memory at a time (files larger than memory); a
    bad line is an error naming the file and line, raised when the reader reaches it."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("incomplete last line (an interrupted write)")
                yield parse(json.loads(line.decode("utf-8")))
            except UnicodeDecodeError:
                raise CorruptFile([BadLine(path, number, "not UTF-8 text")]) from None
            except ValidationError as exc:
                raise CorruptFile([BadLine(path, number, brief(exc))]) from None
            except (ValueError, RecursionError) as exc:
                raise CorruptFile([BadLine(path, number, f"not a valid row: {exc}")]) from None


class JsonlWriter:
    """Rows appended to a new JSONL file as they come, counted (a staging folder's file, read only once whole)."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = 0
        self._handle = path.open("w", encoding="utf-8")

    def write(self, row: Any) -> None:
        self._handle.write(dumps(row) + "\n")
        self.rows += 1

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CorruptFile(ReverieError):
    """A file reverie wrote holds lines it cannot read back: each is named with its line number."""

    def __init__(self, bad: list[BadLine]):
        self.bad = bad
        shown = "\n".join(f"  {line}" for line in bad[:SHOWN_BAD_LINES])
        more = f"\n  ... and {len(bad) - SHOWN_BAD_LINES} more" if len(bad) > SHOWN_BAD_LINES else ""
        super().__init__(f"{bad[0].path}: {len(bad)} unreadable line(s)\n{shown}{more}")

