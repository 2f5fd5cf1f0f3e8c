"""The memory's durable part (SQLite, no torch): documents with their chunks and embeddings, their status, and
the documents hygiene refused, each with its reason. Search structures are rebuilt from it on load."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from reverie.data.dedup import ContaminationIndex
from reverie.data.knowledge import QA, Document, Knowledge, load_knowledge
from reverie.data.quality import QualityRules, check_text
from reverie.data.records import content_id
from reverie.data.splits import knowledge_held_out
from reverie.errors import ReverieError
from reverie.workspace import Workspace

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, questions TEXT NOT NULL, source TEXT NOT NULL,
    status TEXT NOT NULL, added_at REAL NOT NULL, train_questions TEXT NOT NULL DEFAULT '[]', retired_by TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, document_id TEXT NOT NULL, text TEXT NOT NULL, embedding BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (title TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL, at REAL NOT NULL);
"""
DOCUMENT_RULES = QualityRules(max_words=5000)
CHUNK_WORDS = 80
MEMORY_PREFIX = "memory-"  # knowledge document ids of memory documents


@dataclass
class MemoryDocument:
    id: str
    title: str
    text: str
    questions: list[dict] = field(default_factory=list)  # [{question, answer}]: how the Gate checks recall
    source: str = "api"
    status: str = "active"  # 'active' (in memory) | 'consolidated' (recalled closed-book by a release)
    added_at: float = 0.0
    train_questions: list[dict] = field(default_factory=list)  # [{question, answer}] Learn trains on
    retired_by: str | None = None  # the release that recalled it, once consolidated


def chunk_text(text: str, words: int = CHUNK_WORDS) -> list[str]:
    """Fixed-size word windows: a citation points at a passage short enough to read, not the whole document."""
    tokens = text.split()
    return [" ".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]


class MemoryStore:
    """Documents in memory (one SQLite file per workspace, shared by the server and the CLI)."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._conn = sqlite3.connect(ws.state / "memory.sqlite", timeout=30, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(documents)")}
        if "train_questions" not in columns:  # a memory written before training questions existed
            self._conn.execute("ALTER TABLE documents ADD COLUMN train_questions TEXT NOT NULL DEFAULT '[]'")
        if "retired_by" not in columns:  # the release that recalled the document closed-book
            self._conn.execute("ALTER TABLE documents ADD COLUMN retired_by TEXT")

    def hygiene(self, text: str, train_questions: list[dict], contamination: ContaminationIndex) -> str | None:
        """Why a document may not enter memory, or None: the data layer's quality rules, exact duplicates,
        and overlap of the text or a training question with evaluation items (Learn would be taught the test)."""
        if reason := check_text(text, DOCUMENT_RULES):
            return reason
        if self._conn.execute("SELECT 1 FROM documents WHERE id = ?", (content_id(text),)).fetchone():
            return f"exact duplicate of memory document {content_id(text)}"
        if (item := contamination.leak(text)) is not None:
            return f"overlaps evaluation item {item}"
        for number, pair in enumerate(train_questions, start=1):
            if (item := contamination.leak(f"{pair['question']} {pair['answer']}")) is not None:
                return f"training question {number} overlaps evaluation item {item}"
        return None

    def add(self, document: MemoryDocument, chunks: list[str], embeddings: np.ndarray) -> None:
        """The document and its chunks in one transaction: searchable completely or not at all."""
        with self._transaction():
            self._conn.execute("INSERT INTO documents (id, title, text, questions, source, status, added_at, "
                               "train_questions) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
                document.id, document.title, document.text, json.dumps(document.questions), document.source,
                document.status, document.added_at, json.dumps(document.train_questions)))
            self._conn.executemany("INSERT INTO chunks (document_id, text, embedding) VALUES (?, ?, ?)", [
                (document.id, chunk, vector.astype(np.float32).tobytes()) for chunk, vector in zip(chunks, embeddings)])

    def reject(self, title: str, reason: str, source: str) -> None:
        self._conn.execute("INSERT INTO rejected VALUES (?, ?, ?, ?)", (title, reason, source, time.time()))

    def documents(self, status: str | None = "active") -> list[MemoryDocument]:
        query = "SELECT * FROM documents" + (" WHERE status = ?" if status else "") + " ORDER BY added_at"
        rows = self._conn.execute(query, (status,) if status else ()).fetchall()
        return [MemoryDocument(**dict(row) | {"questions": json.loads(row["questions"]),
                                              "train_questions": json.loads(row["train_questions"])}) for row in rows]

    def chunks(self) -> list[tuple[int, str, str, np.ndarray]]:
        """(chunk id, document id, text, embedding) of every active document."""
        rows = self._conn.execute(
            "SELECT c.id, c.document_id, c.text, c.embedding FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE d.status = 'active' ORDER BY c.id").fetchall()
        return [(r["id"], r["document_id"], r["text"], np.frombuffer(r["embedding"], dtype=np.float32)) for r in rows]

    def version(self) -> tuple[int, int]:
        """Changes whenever a chunk is added or a document retired: when a search index must be rebuilt."""
        row = self._conn.execute("SELECT count(*), coalesce(max(c.id), 0) FROM chunks c JOIN documents d "
                                 "ON d.id = c.document_id WHERE d.status = 'active'").fetchone()
        return int(row[0]), int(row[1])

    def remove(self, document_id: str) -> bool:
        """Delete a document and its chunks (whatever its status); False when there is none by that id."""
        with self._transaction():
            self._conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
            removed = self._conn.execute("DELETE FROM documents WHERE id = ?", (document_id,)).rowcount
        return removed > 0

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """All or nothing (the connection autocommits otherwise)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def retire(self, document_ids: list[str], release_id: str) -> None:
        """Consolidated: release `release_id` answers the document's questions closed-book, so it leaves memory."""
        self._conn.executemany("UPDATE documents SET status = 'consolidated', retired_by = ? WHERE id = ?",
                               [(release_id, i) for i in document_ids])

    def restore_unlearned(self, line: set[str]) -> list[str]:
        """Back into memory: documents retired by a release outside `line` (the release now served and its
        ancestors), so a rollback past the release that learned them loses nothing. Returns their ids."""
        rows = self._conn.execute("SELECT id, retired_by FROM documents WHERE status = 'consolidated' "
                                  "AND retired_by IS NOT NULL").fetchall()
        restored = [row["id"] for row in rows if row["retired_by"] not in line]
        self._conn.executemany("UPDATE documents SET status = 'active', retired_by = NULL WHERE id = ?",
                               [(i,) for i in restored])
        return restored

    def rejected(self) -> list[dict]:
        return [dict(r) for r in self._conn.execute("SELECT * FROM rejected ORDER BY at")]


def current_knowledge(ws: Workspace) -> Knowledge:
    """What the next cycle consolidates (frozen into its inputs when it starts: cycle_inputs.py): the configured
    knowledge drop plus every document in memory. A document's training questions join Learn like a drop's
    train_qa; its check questions join the held-out set (it leaves memory once a release answers them
    closed-book)."""
    knowledge = load_knowledge(ws.config.data.knowledge, ws.root)
    documents = []
    for d in MemoryStore(ws).documents():
        try:
            documents.append(Document(id=f"{MEMORY_PREFIX}{d.id}", title=d.title, text=d.text,
                                      train_qa=[QA(**q) for q in d.train_questions],
                                      eval_qa=[QA(**q) for q in d.questions]))
        except (TypeError, ValidationError):  # stored before reverie validated questions on the way in
            raise ReverieError(f"memory document {d.id} ({d.title!r}) has a malformed question; remove it with "
                               f"`reverie memory remove {d.id}` and add it again") from None
    return knowledge.model_copy(update={"documents": knowledge.documents + documents}) if documents else knowledge


def recalled_documents(knowledge: Knowledge, correct: dict[int, bool]) -> list[str]:
    """Memory documents all of whose questions were answered correctly (indices into
    splits.knowledge_held_out)."""
    verdicts: dict[str, list[bool]] = {}
    for index, (document, _) in enumerate(knowledge_held_out(knowledge)):
        if document.id.startswith(MEMORY_PREFIX):
            verdicts.setdefault(document.id.removeprefix(MEMORY_PREFIX), []).append(correct.get(index, False))
    return sorted(doc for doc, marks in verdicts.items() if marks and all(marks))
