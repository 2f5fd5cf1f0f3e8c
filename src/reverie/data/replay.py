"""Hard-example replay: what the Gate saw the model fail comes back in later Learn phases, in measured doses.

A failed held-out question is never trained on itself (that would teach the test); its document's training
material is replayed instead. Each Gate's failures are a dataset of kind "replay" with its cycle; Learn draws
from all of them, and from serving feedback (kind "feedback"), with weight `decay ** age`, where age counts the
cycles started since the one that made it (the next cycle's Learn sees age 0), and never more than its share of
the mix.
"""

from __future__ import annotations

import json
import math
import random
import time

from reverie.data.jsonl import read_jsonl, write_jsonl
from reverie.data.knowledge import Example, Knowledge
from reverie.data.splits import knowledge_held_out
from reverie.registry import DatasetRecord
from reverie.workspace import Workspace

REPLAY_PREFIX = "replay/"  # how replay datasets are labelled for people; readers use kind and cycle_id


def replay_examples(knowledge: Knowledge, failed: list[int]) -> list[Example]:
    """The training material of the documents behind the failed held-out questions (indices into
    splits.knowledge_held_out)."""
    items = knowledge_held_out(knowledge)
    documents = {items[i][0].id: items[i][0] for i in failed}
    examples = []
    for document in documents.values():
        examples.append(Example(completion=f"{document.title}\n{document.text}"))
        examples += [Example(prompt=qa.question, completion=qa.answer) for qa in document.train_qa]
    return examples


def save_replay(ws: Workspace, cycle_id: str, candidate_id: str, examples: list[Example]) -> DatasetRecord:
    """The failures of one Gate as a dataset. The cycle is part of its content, so two Gates that fail the same
    questions still make two datasets (and the older one keeps fading)."""
    with ws.artifacts.stage() as staged:
        write_jsonl(staged.path / "examples.jsonl", (e.to_json() for e in examples))
        (staged.path / "gate.json").write_text(json.dumps({"cycle": cycle_id, "candidate": candidate_id}) + "\n")
    return DatasetRecord(staged.hash, f"{REPLAY_PREFIX}{cycle_id}", len(examples),
                         f"gate failures of {candidate_id}", time.time(), kind="replay", cycle_id=cycle_id)


def replay_ages(ws: Workspace) -> list[tuple[DatasetRecord, int]]:
    """Every replay and feedback dataset, oldest first, with its age: cycles started since its own, less one."""
    cycles = [c.id for c in ws.registry.list_cycles()]
    datasets = sorted(ws.registry.list_datasets(kind="replay") + ws.registry.list_datasets(kind="feedback"),
                      key=lambda d: d.created_at)
    ages = []
    for dataset in datasets:
        since = len(cycles) - 1 - cycles.index(dataset.cycle_id) if dataset.cycle_id in cycles else len(cycles)
        ages.append((dataset, max(0, since - 1)))
    return ages


def replay_count(base: int, share: float, available: int) -> int:
    """How many replay examples a mix of `base` others may take: replay / (base + replay) <= share."""
    if share <= 0 or available == 0:
        return 0
    if share >= 1:
        return available
    return min(available, math.floor(share * base / (1 - share) + 1e-9))


def draw_replay(ws: Workspace, base: int, seed: int, fresh: tuple[DatasetRecord, list[Example]] | None = None
                ) -> tuple[list[Example], list[str]]:
    """Replay examples for a Learn of `base` other examples, and the replay datasets they came from; `fresh`
    is a dataset made by this Learn (not registered yet), at age 0."""
    settings = ws.config.learn
    pool: list[tuple[float, Example, DatasetRecord]] = []
    if fresh is not None:
        pool += [(1.0, example, fresh[0]) for example in fresh[1]]
    for dataset, age in replay_ages(ws):
        rows = read_jsonl(ws.artifacts.path(dataset.hash) / "examples.jsonl")
        pool += [(settings.replay_decay ** age, Example(**row), dataset) for row in rows]
    count = replay_count(base, settings.replay_share, len(pool))
    rng = random.Random(seed)
    # Weighted sampling without replacement (Efraimidis-Spirakis keys): older failures fade.
    ranked = sorted(pool, key=lambda entry: rng.random() ** (1.0 / entry[0]) if entry[0] > 0 else -1.0,
                    reverse=True)[:count]
    return [example for _, example, _ in ranked], sorted({dataset.hash for _, _, dataset in ranked})
