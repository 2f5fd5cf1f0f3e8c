"""JSON Lines: any text survives every store that writes and reads line by line, and a bad line is reported with
its file and line instead of failing the whole file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from reverie.data.feedback import Feedback, append_feedback, read_inbox
from reverie.data.jsonl import CorruptFile, append_jsonl, dumps, read_jsonl, scan_jsonl, write_jsonl
from reverie.data.records import Provenance, Record, Rejected
from reverie.engines.rest_em import TrialJournal, read_journal
from reverie.engines.suites.base import ItemResult
from reverie.workspace import Workspace

# The characters that once split a line (str.splitlines() breaks on them, pydantic wrote them raw), NUL, and
# lone surrogates, which UTF-8 cannot carry; then any other text.
SEPARATORS = "\u2028\u2029\u0085\x00\x0b\x0c\x1c\x1d\x1e\r\n\ud800\udfff"
texts = st.text(alphabet=st.sampled_from(SEPARATORS) | st.characters(codec=None), max_size=40)
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(texts)
def test_a_line_holds_no_character_any_reader_splits_on(text: str) -> None:
    line = dumps({"text": text})
    assert line.splitlines() == [line]
    assert line.encode("utf-8").splitlines() == [line.encode("utf-8")]  # encodable: no raw surrogate
    assert json.loads(line) == {"text": text}


@FUZZ
@given(st.lists(texts, min_size=1, max_size=4))
def test_any_text_round_trips_through_a_written_and_an_appended_file(tmp_path: Path, rows: list[str]) -> None:
    written, appended = tmp_path / "written.jsonl", tmp_path / "appended.jsonl"
    appended.unlink(missing_ok=True)
    write_jsonl(written, ({"text": t} for t in rows))
    for text in rows:
        append_jsonl(appended, {"text": text}, durable=False)
    assert read_jsonl(written) == read_jsonl(appended) == [{"text": t} for t in rows]


@FUZZ
@given(texts, texts)
def test_pydantic_rows_round_trip_as_models(tmp_path: Path, prompt: str, reason: str) -> None:
    provenance = Provenance(source="team", tier=3, licence="x", origin=f"in{prompt}.jsonl:1", ingested_at=1.0)
    rows = [Rejected(origin=prompt, step="schema", reason=reason, row={"prompt": prompt, "nested": [reason]})]
    rows += [Record(prompt="Q " + prompt.replace("\ud800", "").replace("\udfff", ""), completion="A", provenance=provenance,
                    meta={"note": reason})]
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, rows)
    back = read_jsonl(path, lambda row: (Rejected if "step" in row else Record).model_validate(row))
    assert back == rows


@FUZZ
@given(texts)
def test_any_feedback_the_server_accepts_is_read_back_whole(tmp_path: Path, text: str) -> None:
    ws = Workspace.init(tmp_path / "ws")
    clean = text.replace("\ud800", "?").replace("\udfff", "?")  # lone surrogates are refused at the API
    before = len(read_inbox(ws)[0])
    append_feedback(ws, Feedback(id="f", at=1.0, model_id="m", prompt="p" + clean, answer=clean, rating="down",
                                 correction=clean or None))
    rows, bad = read_inbox(ws)
    assert not bad and len(rows) == before + 1
    assert (rows[-1].prompt, rows[-1].answer) == ("p" + clean, clean)


@FUZZ
@given(texts)
def test_journals_and_suite_results_round_trip(tmp_path: Path, text: str) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.unlink(missing_ok=True)
    TrialJournal(journal, "print").add("self-edits", [[text]])
    assert read_journal(journal)["self-edits"] == [[text]]
    item = ItemResult(id="i", prompt=text, output=text, scores={"accuracy": 1.0}, detail={"gold": [text]})
    write_jsonl(tmp_path / "items.jsonl", [item])
    assert read_jsonl(tmp_path / "items.jsonl", lambda row: ItemResult(**row)) == [item]


def test_a_file_with_raw_line_separators_reads_as_one_row_per_line(tmp_path: Path) -> None:
    """Files written before this module left U+2028 raw; they read back as written."""
    path = tmp_path / "old.jsonl"
    path.write_text('{"text": "one\u2028two\u0085three"}\n{"text": "four"}\n', encoding="utf-8")
    assert read_jsonl(path) == [{"text": "one\u2028two\u0085three"}, {"text": "four"}]


def test_a_bad_line_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": \n\xff\xfe\n{"a": 4}\n{"a": 5')
    rows, bad = scan_jsonl(path)
    assert rows == [{"a": 1}, {"a": 4}]
    assert [(b.number, b.torn) for b in bad] == [(2, False), (3, False), (5, True)]
    assert "not UTF-8" in bad[1].reason and "interrupted" in bad[2].reason
    with pytest.raises(CorruptFile, match=rf"{path}: 3 unreadable line\(s\)\n  {path}:2: not a valid row"):
        read_jsonl(path)


def test_a_journal_ignores_its_torn_last_line_but_not_a_bad_one_before_it(tmp_path: Path) -> None:
    path = tmp_path / "round.jsonl"
    journal = TrialJournal(path, "print")
    journal.add("trial/1", 0.5)
    with path.open("ab") as handle:
        handle.write(b'{"key": "trial/2", "val')  # a kill during an append
    assert TrialJournal(path, "print").get("trial/2") is None and read_journal(path)["trial/1"] == 0.5
    path.write_text(path.read_text() + "garbage\n" + dumps({"key": "trial/3", "value": 1.0}) + "\n")
    with pytest.raises(CorruptFile, match=r"round.jsonl:3: not a valid row"):
        read_journal(path)


def test_a_bad_inbox_line_is_reported_and_the_rest_is_read(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    append_feedback(ws, Feedback(id="a", at=1.0, model_id="m", prompt="p", answer="x", rating="down"))
    with (ws.state / "feedback" / "inbox.jsonl").open("a") as handle:
        handle.write('{"id": "b", "rating": "sideways"}\n')
    append_feedback(ws, Feedback(id="c", at=2.0, model_id="m", prompt="q", answer="y", rating="up"))
    rows, [bad] = read_inbox(ws)
    assert [r.id for r in rows] == ["a", "c"]
    assert bad.number == 2 and "rating" in bad.reason
