"""The data pool: ingest from every format with provenance, quarantine with reasons, dedup, contamination,
trust tiers; the counts of every step add up."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reverie.data.dedup import ContaminationIndex, NearDuplicateIndex
from reverie.data.knowledge import load_knowledge
from reverie.data.ingest import PoolIndex, SourceSpec, ingest
from reverie.data.pool import ingest_path, load_records, pool_datasets
from reverie.data.readers import read_rows
from reverie.data.records import Record, Rejected
from reverie.data.splits import knowledge_held_out
from reverie.errors import ReverieError
from reverie.phases.outputs import LearnOutput, read_as
from reverie.workspace import Workspace

from conftest import reverie

TEAM = SourceSpec("team", 3, "internal")
FACTS = [
    "Velmora is an island nation governed from the city of Quistrand since the year 1874.",
    "The Thrannock rowing club has won the Gildermoor Cup eleven times in its long history.",
    "Owls in the northern forests nest in hollow oak trees during the coldest winter months.",
]


def run(path: Path, pool: PoolIndex | None = None, source: SourceSpec = TEAM, min_tier: int = 1,
        evaluation: dict[str, str] | None = None):
    pool = pool or PoolIndex.build([], 0.7)
    return ingest(read_rows(path), source, "general", pool, min_tier, ContaminationIndex(evaluation or {}))


def assert_counts_add_up(result, rows: int) -> None:
    steps = result.steps
    assert steps[0].rows_in == rows
    for before, after in zip(steps, steps[1:]):
        assert after.rows_in == before.kept
    for step in steps:
        assert step.rows_in == step.kept + step.removed + step.quarantined
    assert len(result.records) + len(result.rejected) == rows


def test_malformed_jsonl_rows_are_quarantined_with_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"text": FACTS[0]}), "{not json", json.dumps({"prompt": "Capital of Velmora?"}),
             json.dumps(["a", "list"]), json.dumps({"prompt": "Who rows?", "completion": "Thrannock", "lang": "en"}),
             "", json.dumps({"text": FACTS[2], "bucket": "reasoning"})]
    path.write_text("\n".join(lines) + "\n")
    before = time.time()
    result = run(path)
    assert_counts_add_up(result, rows=6)  # the blank line is not a row
    assert [r.provenance.origin for r in result.records] == [f"{path}:1", f"{path}:5", f"{path}:7"]
    assert result.records[1].meta == {"lang": "en"} and result.records[2].bucket == "reasoning"
    reasons = {r.origin: r.reason for r in result.rejected}
    assert "not valid JSON" in reasons[f"{path}:2"]
    assert "'prompt' and 'completion'" in reasons[f"{path}:3"]
    assert "expected a JSON object" in reasons[f"{path}:4"]
    assert all(r.step == "schema" and r.row is not None for r in result.rejected)
    provenance = result.records[0].provenance
    assert (provenance.source, provenance.tier, provenance.licence) == ("team", 3, "internal")
    assert before <= provenance.ingested_at <= time.time() and len(result.records[0].id) == 16


def test_csv_parquet_and_text_folders_are_read_with_their_origins(tmp_path: Path) -> None:
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text(f'text,bucket\n"{FACTS[0]}",reasoning\n"a","b","c"\n"{FACTS[1]}",\n')
    result = run(csv_path)
    assert_counts_add_up(result, rows=3)
    assert result.rejected[0].origin == f"{csv_path}:3" and "more than the header" in result.rejected[0].reason
    assert [r.bucket for r in result.records] == ["reasoning", "general"]

    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"prompt": ["Q1?", None], "completion": ["A1", "A2"]}), parquet)
    result = run(parquet)
    assert [r.origin for r in result.rejected] == [f"{parquet}#row1"] and len(result.records) == 1

    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text(FACTS[0])
    (folder / "sub" / "b.txt").write_text(FACTS[1])
    (folder / "c.txt").write_bytes(b"\xff\xfe not utf-8")
    (folder / "ignored.bin").write_bytes(b"x")
    result = run(folder)
    assert_counts_add_up(result, rows=3)
    assert {r.meta["file"] for r in result.records} == {"a.md", "sub/b.txt"}
    assert result.rejected[0].reason == "not UTF-8 text"

    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(ReverieError, match="unsupported format .xlsx"):
        next(read_rows(tmp_path / "x.xlsx"))


def test_duplicates_reposts_and_leaks_are_removed_with_what_they_repeat(tmp_path: Path) -> None:
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps({"text": FACTS[0]}) + "\n")
    pool = PoolIndex.build([], 0.7)
    original = run(first, pool).records[0]

    second = tmp_path / "second.jsonl"
    near = FACTS[1].replace("long history", "long past")  # two of thirteen word 3-grams differ
    rows = [FACTS[0].upper(), FACTS[1], near, FACTS[1] + "!", f"Trivia: {FACTS[2]}"]
    second.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    evaluation = {"doc-7/eval_qa/0": "owls in the northern forests nest in hollow oak trees"}
    result = run(second, pool, SourceSpec("web", 1, "unknown"), evaluation=evaluation)
    assert_counts_add_up(result, rows=5)
    assert [r.text for r in result.records] == [FACTS[1]]
    reasons = {r.origin.rsplit(":", 1)[1]: (r.step, r.reason) for r in result.rejected}
    assert reasons["1"] == ("exact dedup", f"repost: exact duplicate of {original.id} from source 'team'")
    assert reasons["3"][0] == "near dedup" and reasons["3"][1] == f"near duplicate of {result.records[0].id}"
    assert reasons["4"][0] == "exact dedup"
    assert reasons["5"] == ("contamination", "overlaps evaluation item doc-7/eval_qa/0 (8-word span or whole item)")


def test_model_written_rows_must_pass_the_quality_rules(tmp_path: Path) -> None:
    path = tmp_path / "teacher.jsonl"
    rows = [{"text": FACTS[0]}, {"text": "again " * 12},
            {"prompt": "Capital and year as JSON?", "completion": '{"capital": "Quistrand", "year": 1874}',
             "bucket": "structured-output"},
            {"prompt": "Where is Velmora governed from, and since when? Answer in JSON.",
             "completion": "The capital is Quistrand, since 1874.",
             "bucket": "structured-output"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run(path, source=SourceSpec("teacher", 2, "cc-by", synthetic=True))
    assert_counts_add_up(result, rows=4)
    quality = {r.origin.rsplit(":", 1)[1]: r.reason for r in result.rejected if r.step == "quality"}
    assert quality["2"].startswith("repetitive") and quality["4"].startswith("not valid JSON")
    assert len(result.records) == 2
    assert len(run(path, source=SourceSpec("team", 2, "internal")).records) == 4  # people's data: no such rules


def test_a_source_below_the_minimum_tier_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "low.jsonl"
    path.write_text(json.dumps({"text": FACTS[0]}) + "\n")
    result = run(path, source=SourceSpec("forum", 0, "unknown"), min_tier=1)
    assert not result.records and result.steps[1].step == "trust" and result.steps[1].quarantined == 1
    assert "tier 0, below data.min_tier 1" in result.rejected[0].reason


def test_near_duplicate_index_finds_planted_copies_and_ignores_strangers() -> None:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(3000)]
    originals = [" ".join(rng.choices(words, k=40)) for _ in range(300)]

    def perturb(text: str) -> str:  # drop or replace two of forty words
        tokens = text.split()
        for _ in range(2):
            tokens[rng.randrange(len(tokens))] = rng.choice(words)
        return " ".join(tokens)

    index = NearDuplicateIndex(threshold=0.6)
    for i, signature in enumerate(index.signatures(originals)):
        index.add(str(i), signature)
    copies = index.signatures([perturb(t) for t in originals[:100]])
    strangers = index.signatures([" ".join(rng.choices(words, k=40)) for _ in range(100)])
    found = sum(index.match(s) == str(i) for i, s in enumerate(copies))
    false = sum(index.match(s) is not None for s in strangers)
    assert found >= 95 and false == 0


def test_cli_ingest_stores_records_rejections_and_manifest(tmp_path: Path) -> None:
    Workspace.init(tmp_path / "ws")
    data = tmp_path / "facts.jsonl"
    data.write_text(json.dumps({"text": FACTS[0]}) + "\n{oops\n")
    result = reverie("data", "ingest", str(data), "--source", "team", "-w", str(tmp_path / "ws"))
    assert "facts.jsonl:2: schema: not valid JSON" in result.stdout
    ws = Workspace.open(tmp_path / "ws")
    [dataset] = pool_datasets(ws)
    assert dataset.name == "pool/facts" and dataset.rows == 1 and "team (tier 3, internal)" in dataset.source
    assert [r.text for r in load_records(ws, dataset)] == [FACTS[0]]
    folder = ws.artifacts.path(dataset.hash)
    [rejected] = [Rejected.model_validate_json(line) for line in (folder / "rejected.jsonl").read_text().splitlines()]
    assert rejected.row == "{oops"
    stats = reverie("data", "stats", "-w", str(tmp_path / "ws"), "--set", "data.mix={general: 3, safety: 1}")
    assert "pool/facts" in stats.stdout and "general" in stats.stdout
    assert "empty: its share goes to the others" in stats.stdout  # nothing in the safety bucket yet
    near = tmp_path / "near.jsonl"
    near.write_text(json.dumps({"text": FACTS[0].replace("since the year", "from the year")}) + "\n")
    reverie("data", "ingest", str(near), "--source", "web", "-w", str(tmp_path / "ws"))  # kept at 0.8
    report = reverie("data", "dedup", "-w", str(tmp_path / "ws"), "--threshold", "0.4").stdout  # exact: 0.54
    assert "2 records in the pool; 1 near duplicate(s) at threshold 0.4" in report
    assert f"{near}:1 ~ {data}:1" in report
    unknown = reverie("data", "ingest", str(data), "--source", "forum", "-w", str(tmp_path / "ws"), check=False)
    assert unknown.returncode == 2 and "not in data.sources (known: team, web, teacher)" in unknown.stderr
    with pytest.raises(ReverieError, match="dataset name"):
        ingest_path(ws, data, "team", "general", name="../escape")
    [record] = load_records(ws, dataset)  # read back with where it came from, for lineage and the tier weights
    assert (record.bucket, record.provenance.source, record.provenance.tier, record.provenance.licence,
            record.provenance.origin) == ("general", "team", 3, "internal", f"{data}:1")


def pool_record(text: str, bucket: str, tier: int = 1) -> Record:
    from reverie.data.records import Provenance

    provenance = Provenance(source=f"tier{tier}", tier=tier, licence="x", origin="test", ingested_at=0.0)
    return Record(text=text, bucket=bucket, provenance=provenance)


def test_mix_sampler_honours_ratios_and_reports_what_it_could_not() -> None:
    from reverie.data.mixing import mix_sample

    records = ([pool_record(f"general {i}", "general") for i in range(500)]
               + [pool_record(f"reasoning {i}", "reasoning") for i in range(30)]
               + [pool_record(f"chat {i}", "chat") for i in range(10)])
    drawn, stats = mix_sample(records, {"general": 0.6, "reasoning": 0.3, "safety": 0.1}, total=100, seed=1)
    by_name = {s.bucket: s for s in stats}
    assert len(drawn) == 100
    # safety is empty: its tenth goes to the others in proportion (2:1)
    assert by_name["general"].drawn == 67 and by_name["reasoning"].drawn == 33
    assert by_name["reasoning"].repeated == 3 and "3 repeated" in by_name["reasoning"].note
    assert "empty" in by_name["safety"].note and by_name["safety"].target_share == pytest.approx(0.1)
    assert by_name["chat"].drawn == 0 and "not in data.mix" in by_name["chat"].note
    assert sum(r.bucket == "general" for r in drawn) == 67
    again, _ = mix_sample(records, {"general": 0.6, "reasoning": 0.3, "safety": 0.1}, total=100, seed=1)
    assert [r.id for r in again] == [r.id for r in drawn]  # seeded


def test_higher_tiers_are_drawn_more_often() -> None:
    from reverie.data.mixing import mix_sample

    records = ([pool_record(f"low {i}", "general", tier=0) for i in range(200)]
               + [pool_record(f"high {i}", "general", tier=3) for i in range(200)])
    drawn, _ = mix_sample(records, {"general": 1.0}, total=100, tier_weight=2.0, seed=0)
    high = sum(r.provenance.tier == 3 for r in drawn)
    assert high > 75  # weight 8 against 1


def test_pool_records_reach_the_release_and_its_card(tmp_path: Path, tiny_model_dir: Path) -> None:
    from conftest import make_workspace
    from reverie.cycle import run_cycle

    root = make_workspace(tmp_path / "ws", tiny_model_dir, dream={"enabled": False},
                          data={"sources": {"team": {"tier": 3, "licence": "internal"}}},
                          learn={"pool_records": 4})
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps({"text": t}) + "\n" for t in FACTS))
    ws = Workspace.open(root)
    dataset, _ = ingest_path(ws, facts, "team", "general")
    outcome = run_cycle(ws)
    released = ws.registry.get_model(outcome.model_id)
    assert dataset.hash in released.datasets
    learn = next(r for r in ws.registry.phase_runs(outcome.cycle_id) if r.phase == "learn")
    assert learn.metrics["pool_drawn_general"] == 4.0  # three records, one repeated
    card = (ws.cards_dir / f"{released.id}.md").read_text()
    assert f"| pool/facts | {dataset.hash} | 3 | ingest facts.jsonl from team (tier 3, internal) |" in card
    tree = reverie("lineage", "-w", str(root)).stdout
    assert f"dataset pool/facts {dataset.hash[:12]}: 3 rows, ingest facts.jsonl from team" in tree
    assert released.id in tree and "base weights:" in tree


def test_replay_count_never_exceeds_its_share() -> None:
    from reverie.data.replay import replay_count

    for base in range(0, 60):
        for share in (0.0, 0.1, 0.2, 0.5, 0.9):
            for available in (0, 3, 1000):
                count = replay_count(base, share, available)
                assert count <= available
                if base + count:
                    assert count / (base + count) <= share + 1e-12
    assert replay_count(80, 0.2, 1000) == 20  # exactly at the cap when there is enough


def test_gate_failures_are_replayed_in_the_next_learn_within_the_cap(tmp_path: Path, tiny_model_dir: Path) -> None:
    from conftest import make_workspace
    from reverie.cycle import run_cycle

    root = make_workspace(tmp_path / "ws", tiny_model_dir, dream={"enabled": False},
                          learn={"replay_share": 0.1, "train": {"epochs": 1}})
    ws = Workspace.open(root)
    first = run_cycle(ws)
    gate = next(r for r in ws.registry.phase_runs(first.cycle_id) if r.phase == "gate")
    assert gate.metrics["failed_questions"] > 0  # a tiny random model fails held-out questions
    [replay] = ws.registry.list_datasets(kind="replay", cycle_id=first.cycle_id)
    assert replay.rows == gate.metrics["replay_examples"] and replay.source.startswith("gate failures of")
    lines = (ws.artifacts.path(replay.hash) / "examples.jsonl").read_text()
    held_out = [qa.question for _, qa in knowledge_held_out(load_knowledge("demo", root))]
    assert not any(question in lines for question in held_out)  # the test questions themselves never train

    listing = reverie("data", "replay", "-w", str(root)).stdout
    assert f"replay/{first.cycle_id}" in listing and replay.hash[:12] in listing

    second = run_cycle(ws)
    learn = next(r for r in ws.registry.phase_runs(second.cycle_id) if r.phase == "learn")
    assert 0 < learn.metrics["replay_examples"] and learn.metrics["replay_share"] <= 0.1
    assert replay.hash in ws.registry.get_model(read_as(learn, LearnOutput).model).datasets
