"""Streaming ingest and the same steps on datatrove's local executor: one result however the input is cut."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import yaml

from reverie.data import ingest as ingest_module
from reverie.data.dedup import ContaminationIndex
from reverie.data.ingest import PoolIndex, SourceSpec, screen, step_reports
from reverie.data.pool import evaluation_items, ingest_path, iter_records, manifest
from reverie.data.readers import RawRow, read_rows
from reverie.data.records import Rejected
from reverie.workspace import Workspace

WORDS = ("river stone lantern orchard harbour meadow copper willow falcon ember quarry thistle garnet beacon "
         "saddle juniper cobalt marble pewter hollow").split()


def corpus(path: Path, rows: int = 60, leak: str = "") -> Path:
    """Distinct texts with every kind of row ingest rejects mixed in: bad JSON, a missing field, an exact copy,
    a near copy, and a leak of an evaluation question."""
    lines = []
    for i in range(rows):
        words = [WORDS[(i * 7 + j * 3 + j * j) % len(WORDS)] for j in range(30)]
        lines.append(json.dumps({"text": f"Note {i}: " + " ".join(words) + f" number {i * 31}."}))
    lines[5] = "{broken"
    lines[9] = json.dumps({"prompt": "no completion"})
    lines[14] = lines[3]
    lines[20] = lines[11].replace("Note 11:", "Note eleven:")
    if leak:
        lines[33] = json.dumps({"prompt": "Quiz", "completion": leak})
    path.write_text("\n".join(lines) + "\n")
    return path


def workspace(root: Path, **data: object) -> Workspace:
    Workspace.init(root)
    config_path = root / "reverie.yaml"
    config = yaml.safe_load(config_path.read_text())
    config.setdefault("data", {}).update(data)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return Workspace.open(root)


def outcome_view(ws: Workspace, dataset) -> tuple[list, list, list]:
    folder = ws.artifacts.path(dataset.hash)
    rejected = [Rejected.model_validate_json(line) for line in (folder / "rejected.jsonl").read_text().splitlines()]
    return ([(r.id, r.provenance.origin) for r in iter_records(ws, dataset)],
            [(r.origin, r.step, r.reason) for r in rejected], manifest(ws, dataset)["steps"])


def test_local_executor_gives_the_inline_result(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ingest_module, "CHUNK_ROWS", 16)  # several chunks, so the merge's chunking is exercised
    inline = workspace(tmp_path / "inline")
    sharded = workspace(tmp_path / "sharded", executor="local", executor_tasks=3, executor_workers=2)
    data = corpus(tmp_path / "notes.jsonl", leak=max(evaluation_items(inline).values(), key=len))
    results = []
    for ws in (inline, sharded):
        ingest_path(ws, data, "team", "general", name="notes")
        [dataset] = ws.registry.list_datasets(kind="pool")
        results.append(outcome_view(ws, dataset))
    assert results[0] == results[1]
    records, rejected, steps = results[0]
    assert len(records) + len(rejected) == 60
    assert {step for _, step, _ in rejected} == {"schema", "contamination", "exact dedup", "near dedup"}
    assert not (sharded.state / "ingest").exists() or not any((sharded.state / "ingest").iterdir())


def test_a_rerun_runs_only_the_shards_that_did_not_finish(tmp_path: Path) -> None:
    from reverie.data.ingest_shards import run_shards

    data = corpus(tmp_path / "notes.jsonl", rows=30)
    ws = workspace(tmp_path / "ws", executor="local", executor_tasks=3, executor_workers=1)
    folder = tmp_path / "shards"
    spec, contamination = SourceSpec("team", 3, "internal"), ContaminationIndex({})
    run_shards(ws, data, spec, "general", contamination, folder)
    finished = {rank: (folder / f"{rank:05d}.jsonl").stat().st_mtime_ns for rank in range(3)}
    (folder / "00001.jsonl").unlink()  # as if shard 1 had been killed: no output, no completion mark
    (folder / "datatrove" / "completions" / "00001").unlink()
    run_shards(ws, data, spec, "general", contamination, folder)
    assert (folder / "00001.jsonl").is_file()
    assert {rank: (folder / f"{rank:05d}.jsonl").stat().st_mtime_ns for rank in (0, 2)} == \
        {rank: finished[rank] for rank in (0, 2)}
    lines = [json.loads(line) for rank in range(3) for line in (folder / f"{rank:05d}.jsonl").read_text().splitlines()]
    assert sorted(line["position"] for line in lines) == list(range(1, 31))  # every row in exactly one shard


def test_screen_pulls_rows_a_chunk_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """The first outcomes come out before the input is read to its end: memory holds a chunk, not the input."""
    monkeypatch.setattr(ingest_module, "CHUNK_ROWS", 10)
    pulled = 0

    def rows() -> Iterator[RawRow]:
        nonlocal pulled
        for row in read_rows(corpus(tmp_path / "notes.jsonl", rows=60)):
            pulled += 1
            yield row

    outcomes = screen(rows(), SourceSpec("team", 3, "internal"), "general", PoolIndex.build([], 0.7), 1,
                      ContaminationIndex({}), step_reports())
    next(outcomes)
    assert pulled == 10
    assert len(list(outcomes)) == 59 and pulled == 60
