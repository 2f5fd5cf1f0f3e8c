"""Memory-only slot actions: work that changes the retrieval side, never the weights. One object per action,
registered by name in MEMORY_ACTIONS, which is what a rhythm file's `memory:` may list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from reverie.workspace import Workspace


def refresh_memory(ws: Workspace) -> str:
    """Read the knowledge drop and every memory document the next cycle will consolidate (a malformed one fails
    here, not in the night's cycle), then rebuild the retrieval index from the memory store and retrieve the
    newest document by its title. The server rebuilds its own index whenever the store changes."""
    from reverie.memory.store import MemoryStore, current_knowledge

    knowledge = current_knowledge(ws)
    store = MemoryStore(ws)
    documents = store.documents()
    line = f"{len(knowledge.documents)} knowledge document(s) for the next cycle, {len(documents)} in memory"
    if not documents:
        return line + "; no index to build"
    from reverie.memory.retrieval import ShortTermMemory

    newest = documents[-1]
    hits = ShortTermMemory(ws).search(newest.title, k=1)
    found = "retrieved" if hits and hits[0].document_id == newest.id else "NOT retrieved"
    return line + f"; index rebuilt over {len(store.chunks())} chunk(s); newest document {found} by its title"


@dataclass(frozen=True)
class MemoryActionSpec:
    about: str
    run: Callable[[Workspace], str]  # returns one line saying what it did


MEMORY_ACTIONS: dict[str, MemoryActionSpec] = {
    "refresh-memory": MemoryActionSpec(
        "check the knowledge base and short-term memory the next cycle reads, and rebuild the retrieval index",
        refresh_memory),
}
