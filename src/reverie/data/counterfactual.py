"""Counterfactual data: minimal, deterministic perturbations of the documents (a year shifted, a number changed,
a name swapped for another of the documents' names) and false-premise questions built from question-answer
pairs, each with the correction a model should give and a true-premise control it should answer normally.

No torch and no model: the same documents and questions always give the same items, so that Dream's
counterfactual strategy (from the training questions) and the Gate's false_premise suite (from the held-out
ones) build theirs by one rule. A change that is not found in the document, or that leaves the text as it
was, is returned as Rejected with its reason."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from reverie.data.knowledge import QA, Document, Example
from reverie.data.quality import ENGLISH_FUNCTION_WORDS
from reverie.data.records import Rejected
from reverie.data.text import normalize

KINDS = ("year", "number", "entity")
STEP = "counterfactual"
YEAR = re.compile(r"\b(?:1[0-9]{3}|20[0-9]{2})\b")
NUMBER = re.compile(r"\b\d[\d,]*(?:\.\d+)?\b")
NUMBER_VALUES = {word: value for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {
    word: 10 * tens for tens, word in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), start=3)}
NUMBER_WORDS = {value: word for word, value in NUMBER_VALUES.items()}
WHOLE = r"(?<![\w-])(?:{})(?![\w-])"  # a whole word, not part of a hyphenated one (twenty-two, Kestrivane-4)
ANY_NUMBER_WORD = re.compile(WHOLE.format("|".join(NUMBER_VALUES)), re.I)
# "one" and "zero" are left alone in documents: "one of the ..." is rarely a count
NUMBER_WORD = re.compile(WHOLE.format("|".join(w for w in NUMBER_VALUES if w not in ("zero", "one"))), re.I)
ENTITY = re.compile(WHOLE.format(r"[A-Z][a-z]+(?: [A-Z][a-z]+)*"))
NOT_NAMES = frozenset("january february march april may june july august september october november december "
                      "monday tuesday wednesday thursday friday saturday sunday".split()) | ENGLISH_FUNCTION_WORDS
# words that open a question without saying what kind of thing it asks for
QUESTION_WORDS = frozenset("what which whose how in on at under from for of to by did does do is are was were"
                           .split()) | ENGLISH_FUNCTION_WORDS
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
PREMISE_TEMPLATES = ("{question} Explain why it is {value}.",
                     "{question} I read that it is {value}; tell me more about that.")


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def kind_of(value: str) -> str:
    """Which rule changes a value: a year, a number (digits or a number word), or else an entity."""
    if YEAR.fullmatch(value.strip()):
        return "year"
    if NUMBER.search(value) or ANY_NUMBER_WORD.search(value):
        return "number"
    return "entity"


def _shift_year(value: str, seed: int) -> str:
    year = int(value)
    shift = 1 + seed % 4
    return str(year - shift if (seed >> 4) & 1 else year + shift)


def _change_number(value: str, seed: int) -> str:
    """The last number in `value` with its first digit changed (1 to 2, ..., 9 to 1), or its last number word moved
    by two, or ten for the tens (seven to nine, nineteen to seventeen, ninety to eighty), keeping the capital."""
    digits = list(NUMBER.finditer(value))
    if digits:
        found = digits[-1]
        first = int(found.group()[0])
        changed = str(first % 9 + 1) + found.group()[1:]
        return value[: found.start()] + changed + value[found.end():]
    found = list(ANY_NUMBER_WORD.finditer(value))[-1]
    number = NUMBER_VALUES[found.group().lower()]
    word = next(NUMBER_WORDS[n] for n in (number + 2, number - 2, number + 10, number - 10) if n in NUMBER_WORDS)
    word = word.capitalize() if found.group()[0].isupper() else word
    return value[: found.start()] + word + value[found.end():]


def perturb(value: str, kind: str, alternatives: Sequence[str], seed: int) -> str | None:
    """`value` changed by the rule of its kind, which always changes it: a year shifted, a digit or number word
    changed, an entity swapped for one of `alternatives` that differs from it (None when none does)."""
    if kind == "year":
        return _shift_year(value, seed)
    if kind == "number":
        return _change_number(value, seed)
    others = [a for a in alternatives if normalize(a) != normalize(value)]
    return others[seed % len(others)] if others else None


def locate(value: str, text: str) -> re.Match[str] | None:
    """Where `value` occurs in `text` as whole words, ignoring case."""
    return re.search(r"(?<!\w)" + re.escape(value.strip()) + r"(?!\w)", text, re.IGNORECASE)


def sentence_at(text: str, position: int) -> tuple[int, int]:
    """The (start, end) of the sentence of `text` that holds `position`."""
    starts = [0] + [m.end() for m in SENTENCE_END.finditer(text)]
    start = max(s for s in starts if s <= position)
    following = [s for s in starts if s > position]
    return start, (following[0] if following else len(text))


def entities(document: Document) -> list[str]:
    """Capitalised names in a document, in order, once each: not a lone word opening a sentence (It, She, Velmora
    at the start could be any word), and not a common English word."""
    starts = {0} | {m.end() for m in SENTENCE_END.finditer(document.text)}
    found: list[str] = []
    for match in ENTITY.finditer(document.text):
        name = match.group()
        if (match.start() in starts and " " not in name) or name.lower() in NOT_NAMES:
            continue
        if name not in found:
            found.append(name)
    return found


def _matched_case(replacement: str, original: str) -> str:
    return replacement[0].lower() + replacement[1:] if original[:1].islower() else replacement


@dataclass(frozen=True)
class Change:
    """One value of a document changed: the sentence stating it, and that sentence with the new value."""

    kind: str
    original: str  # as the document spells it
    replacement: str
    sentence: str
    altered: str


def _change(text: str, match: re.Match[str], kind: str, alternatives: Sequence[str], seed: int,
            ) -> Change | str:
    """The change of the value `match` found in `text`, or why there is none."""
    replacement = perturb(match.group(), kind, alternatives, seed)
    if replacement is None:  # an entity with nothing to swap in, or only itself (perturb leaves it out)
        if not alternatives:
            return f"no other {kind} to swap in for {match.group()!r}"
        return f"swapping in {', '.join(sorted(set(alternatives)))} for {match.group()!r} leaves the text as it was"
    start, end = sentence_at(text, match.start())
    sentence = text[start:end].strip()
    offset = match.start() - start - (len(text[start:end]) - len(text[start:end].lstrip()))
    altered = sentence[:offset] + _matched_case(replacement, match.group()) + sentence[offset + len(match.group()):]
    return Change(kind, match.group(), _matched_case(replacement, match.group()), sentence, altered)


@dataclass(frozen=True)
class FalsePremise:
    """A question asked as though its answer were `false_value`; the control asks it with the true value."""

    id: str
    question: str
    true_value: str
    false_value: str
    kind: str
    sentence: str  # the document's sentence that states the true value

    def _asked(self, value: str) -> str:
        return PREMISE_TEMPLATES[_hash(self.id) % len(PREMISE_TEMPLATES)].format(question=self.question, value=value)

    def prompt(self) -> str:
        return self._asked(self.false_value)

    def control(self) -> str:
        return self._asked(self.true_value)

    def correction(self) -> str:
        """What a model should say to the false premise: the value it knows first, then the verdict, so that the
        verdict compares two values in view instead of being decided at the first token ("No —" first taught
        SmolLM2 the form without when to use it: controls 1.000 -> 0.567)."""
        return (f"It is {self.true_value}, not {self.false_value}: the premise is wrong. "
                f"The document says: {self.sentence}")

    def confirmation(self) -> str:
        return f"It is {self.true_value}, as the question says. The document says: {self.sentence}"


def question_kind(question: str) -> str:
    """What a question asks for, roughly: who, where or when, else the word after its "what" or "which" (colour,
    town), else its first content word (capital), so that an entity is swapped for another answer of that kind."""
    words = normalize(question).split()
    if words and words[0] in ("who", "where", "when"):
        return words[0]
    asked = [after for before, after in zip(words, words[1:]) if before in ("what", "which") and
             after not in QUESTION_WORDS]  # "... is mainly which colour?" asks for a colour
    return next(iter(asked), next((w for w in words if w not in QUESTION_WORDS), ""))


def false_premises(items: Sequence[tuple[Document, QA]], documents: Sequence[Document], kinds: Sequence[str] = KINDS,
                   ) -> tuple[list[FalsePremise], list[Rejected]]:
    """A false premise for each question whose answer is found in its document: the answer shifted (a year),
    changed (a number) or swapped (an entity: another answer to a question of the same kind, else a name of as
    many words from another document). The caller chooses the split: Dream the training questions, the
    Gate the held-out ones; `documents` only lend names to swap in."""
    premises: list[FalsePremise] = []
    rejected: list[Rejected] = []
    names = {document.id: entities(document) for document in documents}
    for document, qa in items:
        item_id = f"{document.id}/{qa.question}"

        def reject(reason: str) -> None:
            rejected.append(Rejected(origin=f"document {document.id}", step=STEP, reason=reason,
                                     row={"question": qa.question, "answer": qa.answer}))

        kind = kind_of(qa.answer)
        if kind not in kinds:
            reject(f"a {kind} change is not among the configured kinds ({', '.join(kinds)})")
            continue
        match = locate(qa.answer, document.text)
        if match is None:
            reject(f"the answer {qa.answer!r} is not found in the document")
            continue
        same_kind = sorted({a.answer for _, a in items if question_kind(a.question) == question_kind(qa.question)})
        sized = sorted({n for other, found in names.items() if other != document.id for n in found
                        if len(n.split()) == len(qa.answer.split())}) if match.group()[:1].isupper() else []
        alternatives = [a for a in same_kind if normalize(a) != normalize(qa.answer)] or sized
        change = _change(document.text, match, kind, alternatives, _hash(item_id))
        if isinstance(change, str):
            reject(change)
            continue
        false_value = str(perturb(qa.answer, kind, alternatives, _hash(item_id)))  # the change, as the QA spells it
        premises.append(FalsePremise(item_id, qa.question, qa.answer, false_value, kind, change.sentence))
    return premises, rejected


@dataclass(frozen=True)
class PassageEdit:
    """A document with one value changed, to be spotted."""

    document: Document
    change: Change

    def text(self) -> str:
        return self.document.text.replace(self.change.sentence, self.change.altered, 1)

    def correction(self) -> str:
        change = self.change
        return f"No — the document says {change.original}, not {change.replacement}: {change.sentence}"


def passage_prompt(title: str, text: str) -> str:
    return f"Is this text accurate?\n\nTitle: {title}\n{text}"


def _spans(document: Document, names: list[str], kind: str) -> list[re.Match[str]]:
    """Every value of one kind in a document, in order: the years, the other numbers, the names."""
    text = document.text
    if kind == "year":
        return list(YEAR.finditer(text))
    if kind == "number":
        years = {m.start() for m in YEAR.finditer(text)}
        return [m for m in NUMBER.finditer(text) if m.start() not in years] + list(NUMBER_WORD.finditer(text))
    return [m for name in names if (m := locate(name, text)) is not None]


def passage_edits(documents: Sequence[Document], kinds: Sequence[str] = KINDS, per_document: int = 2,
                  ) -> tuple[list[PassageEdit], list[Rejected]]:
    """Up to `per_document` changed copies of each document, taking the kinds in turn (a year shifted, a number
    changed, a name swapped for another document's name of as many words), the first kind and the value within
    each chosen by a hash of the document, so that every run changes the same ones. Every change that fails is
    returned with its reason."""
    edits: list[PassageEdit] = []
    rejected: list[Rejected] = []
    names = {document.id: entities(document) for document in documents}
    for document in documents if per_document else ():
        seed = _hash(document.id)
        others = sorted({n for other, found in names.items() if other != document.id for n in found})
        candidates: dict[str, list[re.Match[str]]] = {}
        for kind in kinds:
            spans = _spans(document, names[document.id], kind)
            candidates[kind] = spans[seed % len(spans):] + spans[: seed % len(spans)] if spans else []
        reasons = [] if any(candidates.values()) else [f"no {' or '.join(kinds)} in the text to change"]
        made, turn = 0, [*kinds[seed % len(kinds):], *kinds[: seed % len(kinds)]]  # which kind goes first varies
        while made < per_document and any(candidates.values()):
            for kind in turn:
                if made >= per_document or not candidates[kind]:
                    continue
                match = candidates[kind].pop(0)
                sized = [n for n in others if len(n.split()) == len(match.group().split())]
                change = _change(document.text, match, kind, sized, seed)
                if isinstance(change, str):
                    reasons.append(change)
                else:
                    edits.append(PassageEdit(document, change))
                    made += 1
        rejected += [Rejected(origin=f"document {document.id}", step=STEP, reason=reason, row={"document": document.id})
                     for reason in reasons]
    return edits, rejected


def counterfactual_examples(premises: Sequence[FalsePremise], edits: Sequence[PassageEdit]) -> list[Example]:
    """SFT examples: each false premise corrected beside its true-premise control answered normally, and each
    changed document corrected beside its unchanged copy confirmed (once per document), so that the model learns
    to tell them apart rather than to deny everything."""
    examples = [example for premise in premises for example in (
        Example(prompt=premise.prompt(), completion=premise.correction()),
        Example(prompt=premise.control(), completion=premise.confirmation()))]
    examples += [Example(prompt=passage_prompt(edit.document.title, edit.text()), completion=edit.correction())
                 for edit in edits]
    confirmed = {edit.document.id: edit.document for edit in edits}
    examples += [Example(prompt=passage_prompt(document.title, document.text),
                         completion="Yes — this is what the document says.") for document in confirmed.values()]
    return examples
