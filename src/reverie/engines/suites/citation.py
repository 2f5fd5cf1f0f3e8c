"""Citation confidence: is a cited note with a higher retrieval score more often right? Each held-out question
is asked with the notes memory retrieval finds for it among the knowledge documents (chunked and embedded as
`reverie memory add` does, scored by cosine similarity, at most k above memory's MIN_SCORE), numbered as the
server numbers them. The note the answer cites (else the top one, listed first among the server's citations) is
scored: right when it holds the answer; its retrieval score, read as the chance of that, gives a Brier score and
an expected calibration error (stats.calibration_gaps).

The embedder comes in as a function, loaded only when the suite runs (the server's all-MiniLM-L6-v2 in a
workspace; any encoder returning unit-length rows in tests)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.knowledge import Knowledge
from reverie.data.splits import knowledge_held_out
from reverie.data.text import contains_phrase
from reverie.engines.suites.answering import answer_prompts
from reverie.engines.suites.base import ItemResult, fingerprint
from reverie.memory.store import chunk_text
from reverie.stats import brier, calibration_gaps

Encoder = Callable[[list[str]], np.ndarray]  # texts -> unit-length embeddings, one row each
INSTRUCTION = ("Notes from memory:\n{notes}\n\nAnswer using the notes when they help, and cite the number of the "
               "note you used, like [1].\nQuestion: {question}")


@dataclass(frozen=True)
class Note:
    title: str
    text: str
    score: float


def cited_note(output: str, notes: int) -> int | None:
    """The first valid note number the answer cites, [n] with 1 <= n <= notes (1-based), or None."""
    return next((int(n) for n in re.findall(r"\[(\d+)\]", output) if 1 <= int(n) <= notes), None)


def citation_scores(output: str, notes: list[Note], gold: str) -> tuple[dict[str, float], float | None]:
    """The item's metrics before calibration, and the confidence of the note it rests on (None: no notes, no
    metrics). That note is the one the answer cites, else the top one, which the server lists first among the
    answer's citations; it is right when it holds the answer, and its Brier term reads its score as that chance."""
    if not notes:
        return {}, None
    number = cited_note(output, len(notes))
    note = notes[(number or 1) - 1]
    right = contains_phrase(note.text, gold)
    scores = {"cited": float(number is not None), "cited_right": float(right),
              "brier": brier(confidence(note.score), right)}
    return scores, confidence(note.score)


def confidence(score: float) -> float:
    """A cosine similarity read as a probability: clipped to [0, 1]."""
    return min(1.0, max(0.0, score))


def with_calibration(results: list[ItemResult]) -> list[ItemResult]:
    """Adds each cited item's ECE term, its bin's gap (their mean over the cited items is the ECE)."""
    cited = [r for r in results if "cited_right" in r.scores]
    gaps = calibration_gaps([r.detail["confidence"] for r in cited], [r.scores["cited_right"] == 1.0 for r in cited])
    for result, gap in zip(cited, gaps):
        result.scores["ece"] = gap
    return results


class CitationSuite:
    name = "citation"

    def __init__(self, knowledge: Knowledge, encoder: Callable[[], Encoder], encoder_name: str, k: int,
                 min_score: float, answer_tokens: int, batch_size: int):
        held_out = knowledge_held_out(knowledge)
        self.questions = [(qa.question, qa.answer) for _, qa in held_out]
        self.chunks = [(doc.title, chunk) for doc in knowledge.documents for chunk in chunk_text(doc.text)]
        self._encoder = encoder
        self.encoder_name = encoder_name
        self.k, self.min_score = k, min_score
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint(self.questions, self.chunks, self.encoder_name, self.k, self.min_score, self.answer_tokens)

    def retrieve(self, encode: Encoder) -> list[list[Note]]:
        """Each question's notes, best first: the top k chunks by cosine similarity, at least min_score."""
        chunk_vectors = encode([f"{title}: {text}" for title, text in self.chunks])
        scores = encode([question for question, _ in self.questions]) @ chunk_vectors.T
        notes = []
        for row in scores:
            best = np.argsort(-row, kind="stable")[: self.k]
            notes.append([Note(*self.chunks[j], float(row[j])) for j in best if row[j] >= self.min_score])
        return notes

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        notes = self.retrieve(self._encoder())
        prompts = [INSTRUCTION.format(notes="\n".join(f"[{n}] {note.title}: {note.text}"
                                                      for n, note in enumerate(found, start=1)), question=question)
                   if found else question for (question, _), found in zip(self.questions, notes)]
        outputs = answer_prompts(model, tokenizer, prompts, self.answer_tokens, self.batch_size, "citation")
        results = []
        for index, ((question, gold), found, output) in enumerate(zip(self.questions, notes, outputs)):
            scores, cited_confidence = citation_scores(output, found, gold)
            results.append(ItemResult(str(index), question, output, scores, {
                "gold": gold, "notes": [note.__dict__ for note in found], "confidence": cited_confidence}))
        return with_calibration(results)
