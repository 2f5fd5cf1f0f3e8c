"""A cycle's inputs, frozen when it starts: the knowledge it trains and gates on (the knowledge drop plus the
documents in short-term memory), the feedback waiting in the inbox, the pool datasets Learn may draw from, the
preference datasets and red-team library Dream's dpo may draw from, and the draw seed. They are stored as one
content-addressed artifact the cycle record points to; every phase reads them from there, so a document posted
while a cycle runs waits for the next cycle instead of joining this one's Gate untrained, and a resumed cycle
sees exactly what it started with."""

from __future__ import annotations

import zlib

from pydantic import BaseModel, ConfigDict, ValidationError

from reverie.artifacts import hash_directory
from reverie.data.feedback import Feedback, pending_feedback, read_inbox, report_unreadable
from reverie.data.knowledge import Knowledge
from reverie.data.pool import pool_datasets
from reverie.data.preference import preference_datasets
from reverie.data.redteam import library_versions
from reverie.errors import ReverieError
from reverie.memory.store import MEMORY_PREFIX, MemoryStore, current_knowledge
from reverie.registry import Cycle
from reverie.workspace import Workspace

INPUTS_FILE = "inputs.json"


class CycleInputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    knowledge: Knowledge  # the knowledge drop plus the memory documents, as the cycle started
    feedback: list[Feedback]  # thumbs-down rows not yet in a replay dataset
    liked: list[Feedback] = []  # thumbs-up rows to the prompts of `feedback`: with those, preference pairs
    pool: list[str]  # hashes of the pool datasets Learn may draw from
    preference: list[str] = []  # hashes of the preference datasets Dream may draw from (none before they existed)
    redteam: str | None = None  # hash of the red-team library version Dream's pairs and prompts come from
    draw_seed: int  # Learn's pool and replay draws: fresh every cycle, the same on resume

    def memory_documents(self) -> list[str]:
        """Ids of the memory documents this cycle consolidates."""
        return [d.id.removeprefix(MEMORY_PREFIX) for d in self.knowledge.documents if d.id.startswith(MEMORY_PREFIX)]


def freeze_inputs(ws: Workspace, cycle_id: str) -> tuple[str, CycleInputs]:
    """Snapshot the inputs for cycle `cycle_id` as an artifact; returns its hash and the inputs."""
    feedback, unreadable = pending_feedback(ws)
    report_unreadable(unreadable)
    disliked = {row.prompt for row in feedback}
    inputs = CycleInputs(
        knowledge=current_knowledge(ws), feedback=feedback,
        liked=[row for row in read_inbox(ws)[0] if row.rating == "up" and row.prompt in disliked],
        pool=[d.hash for d in pool_datasets(ws)],
        preference=[d.hash for d in preference_datasets(ws)],
        redteam=versions[-1].hash if (versions := library_versions(ws)) else None,
        draw_seed=ws.config.learn.train.seed + zlib.crc32(cycle_id.encode()),
    )
    with ws.artifacts.stage() as staged:
        (staged.path / INPUTS_FILE).write_text(inputs.model_dump_json(indent=1), encoding="utf-8")
    return staged.hash, inputs


def load_inputs(ws: Workspace, cycle: Cycle) -> CycleInputs:
    """The cycle's frozen inputs, after checking that their artifact still holds what was frozen."""
    if cycle.inputs is None:
        raise ReverieError(f"cycle {cycle.id} has no frozen inputs")
    advice = "abandon the cycle with `reverie cycle --abandon` and start a new one"
    try:
        path = ws.artifacts.path(cycle.inputs)
    except ReverieError as exc:
        raise ReverieError(f"cycle {cycle.id}: its frozen inputs are gone ({exc}); {advice}") from None
    if (found := hash_directory(path)) != cycle.inputs:
        raise ReverieError(f"cycle {cycle.id}: its frozen inputs changed on disk (artifact {cycle.inputs[:12]} now "
                           f"hashes to {found[:12]}), so resuming would not see what the cycle started with; {advice}")
    try:
        return CycleInputs.model_validate_json((path / INPUTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        raise ReverieError(f"cycle {cycle.id}: its frozen inputs do not read ({exc}); {advice}") from None


def waiting_for_next_cycle(ws: Workspace, inputs: CycleInputs) -> list[str]:
    """What arrived after the cycle froze its inputs, in words: it joins the next cycle."""
    frozen_memory, frozen_feedback = set(inputs.memory_documents()), {row.id for row in inputs.feedback}
    memory = [d.id for d in MemoryStore(ws).documents() if d.id not in frozen_memory]
    feedback = [row.id for row in pending_feedback(ws)[0] if row.id not in frozen_feedback]
    waiting = []
    if memory:
        waiting.append(f"{len(memory)} memory document(s) added since the cycle started wait for the next cycle "
                       f"({', '.join(memory[:5])}{', ...' if len(memory) > 5 else ''})")
    if feedback:
        waiting.append(f"{len(feedback)} feedback row(s) posted since the cycle started wait for the next cycle")
    return waiting
