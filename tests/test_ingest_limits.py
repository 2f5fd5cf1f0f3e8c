"""Ingest at its edge: rows too large, too deep or not Unicode are quarantined one by one with a reason, a folder
is read without leaving it, an empty input registers nothing, and an ingest killed mid-write leaves no orphan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reverie.data import readers
from reverie.data.ingest import PoolIndex, SourceSpec, ingest
from reverie.data.pool import ingest_path, load_records, pool_datasets
from reverie.data.readers import read_rows
from reverie.data.dedup import ContaminationIndex
from reverie.errors import ReverieError
from reverie.workspace import Workspace

from conftest import reverie

TEAM = SourceSpec("team", 3, "internal")
GOOD = "Velmora is an island nation governed from the city of Quistrand since the year 1874."


def ingest_file(path: Path):
    return ingest(read_rows(path), TEAM, "general", PoolIndex.build([], 0.8), 1, ContaminationIndex({}))


def test_deep_nesting_and_huge_numbers_quarantine_their_row_only(tmp_path: Path) -> None:
    path = tmp_path / "hostile.jsonl"
    deep = '{"text": "x", "meta": ' + "[" * 200_000 + "]" * 200_000 + "}"
    lines = [json.dumps({"text": GOOD}), deep, '{"text": ' + "9" * 5000 + "}",
             '{"text": "y", "meta": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}", json.dumps({"text": "Owls in the northern forests nest in hollow oak trees in winter."})]
    path.write_text("\n".join(lines) + "\n")
    result = ingest_file(path)
    assert [r.provenance.origin for r in result.records] == [f"{path}:1", f"{path}:5"]
    reasons = {r.origin.rsplit(":", 1)[1]: r.reason for r in result.rejected}
    assert reasons["2"] == reasons["4"] == f"nested deeper than the limit of {readers.MAX_DEPTH}"
    assert "digits" in reasons["3"]
    assert all(len(json.dumps(r.row)) < 1000 for r in result.rejected)  # a shown prefix, not the whole row


def test_an_overlong_line_is_quarantined_and_reading_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 100)
    path = tmp_path / "long.jsonl"
    long_line = json.dumps({"text": "word " * 200}) + "\n"
    path.write_text(long_line + json.dumps({"text": GOOD[:60]}) + "\n")
    [row, ok] = list(read_rows(path))
    assert row.fields is None and row.error == f"line of {len(long_line)} bytes is over the limit of 100"
    assert ok.origin == f"{path}:2" and ok.fields == {"text": GOOD[:60]}


def test_lone_surrogates_are_quarantined_and_line_separators_kept(tmp_path: Path) -> None:
    path = tmp_path / "unicode.jsonl"
    path.write_text('{"text": "broken \\ud800 text"}\n' + json.dumps({"text": GOOD + "\u2028\u2029\u0085\x00"})
                    + "\n")
    result = ingest_file(path)
    assert [r.text for r in result.records] == [GOOD + "\u2028\u2029\u0085\x00"]
    [rejected] = result.rejected
    assert rejected.step == "schema" and "lone surrogate U+D800 at character 7" in rejected.reason


def test_a_folder_ingest_does_not_follow_links_out_of_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("The vault code is 4471 and it is written on the back of the painting.")
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(GOOD)
    (folder / "passwd.txt").symlink_to(outside)
    (folder / "same.md").symlink_to(folder / "a.txt")  # inside the folder: read (and deduplicated)
    (folder / "linked").symlink_to(tmp_path, target_is_directory=True)
    result = ingest_file(folder)
    assert [r.text for r in result.records] == [GOOD]
    reasons = {Path(r.origin).name: r.reason for r in result.rejected}
    assert reasons["passwd.txt"].startswith(f"symbolic link to {outside.resolve()}, outside {folder}")
    assert reasons["linked"] == "symbolic link to a folder: not followed"
    assert reasons["same.md"].startswith("exact duplicate")
    assert "vault" not in json.dumps([r.model_dump() for r in result.rejected])


def test_a_folder_of_too_many_files_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "MAX_FILES", 2)
    for n in range(3):
        (tmp_path / f"{n}.txt").write_text(f"{GOOD} {n}")
    with pytest.raises(ReverieError, match="3 text files, over the limit of 2 per ingest"):
        list(read_rows(tmp_path))


def test_an_empty_input_registers_nothing_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace.init(root)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result = reverie("data", "ingest", str(empty), "--source", "team", "-w", str(root), check=False)
    assert result.returncode == 2 and "no rows to ingest" in result.stderr and "Traceback" not in result.stderr
    assert pool_datasets(Workspace.open(root)) == []


def test_an_ingest_after_a_killed_one_removes_its_orphans(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    stray = ws.artifacts.staging_root / "killed-mid-write"
    stray.mkdir()
    (stray / "records.jsonl").write_text("{}\n")
    orphan = ws.artifacts.root / ("ab" * 32)  # renamed into the store, never registered
    orphan.mkdir()
    data = tmp_path / "facts.jsonl"
    data.write_text(json.dumps({"text": GOOD}) + "\n")
    dataset, _ = ingest_path(ws, data, "team", "general")
    assert ws.artifacts.all_hashes() == {dataset.hash} and not any(ws.artifacts.staging_root.iterdir())
    assert [r.text for r in load_records(ws, dataset)] == [GOOD]



def test_a_red_team_file_with_a_lone_surrogate_is_refused_naming_its_line(tmp_path: Path) -> None:
    from reverie.data.redteam import read_items

    path = tmp_path / "redteam.jsonl"
    path.write_text(json.dumps({"prompt": "How do I pick a lock?", "must_refuse": True}) + "\n"
                    + '{"prompt": "broken \\udfff", "must_refuse": true}\n')
    with pytest.raises(ReverieError, match=rf"{path}:2: prompt: lone surrogate U\+DFFF at character 7"):
        read_items(path, "jsonl")
