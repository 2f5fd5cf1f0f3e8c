"""Whether an answer's claims are supported by the document it was given: a torch-free check on content words
and numbers, for the grounded suite's hallucination rate.

A claim (a sentence of the answer) is supported when every number in it occurs in the document or the question,
and at least SUPPORT_SHARE of its content words do (after a light stemming, so 'painted' meets 'paints'). Words the
question brought in are never a hallucination, nor are hedges ('I do not know', 'the document says'). Lexical, so
a paraphrase with new words counts as unsupported and a contradiction made of the document's own words passes:
a floor on invention, not a judge of truth."""

from __future__ import annotations

import re
from dataclasses import dataclass

from reverie.data.text import normalize

SUPPORT_SHARE = 0.8
FUNCTION_WORDS = frozenset("""  # contractions as normalize() leaves them: don't -> dont
a an the and or but if then so than that this these those there here it its it's is are was were be been being am
do does did done doing have has had having of in on at by for from to into onto with without within about above
below over under up down out off as not no nor yes very too also just only even still yet more most much many some
any all each every both either neither such own same other another which who whom whose what when where why how
i me my mine we us our you your he him his she her they them their one can could may might must shall should will
would while because since until upon via per against between through during before after again further once
dont doesnt didnt cant cannot wont isnt arent wasnt werent im ive id youre theyre thats
""".split())
HEDGE_WORDS = frozenset("""
know knows known sure think believe answer answers question questions document documents text passage passages
according mentioned mention mentions say says said state states stated information provided given based note notes
""".split())
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """Stemmed words that carry content: no function words, hedges or bare numbers."""
    return {_stem(word) for word in normalize(text).split()
            if word not in FUNCTION_WORDS and word not in HEDGE_WORDS and not word.isdigit()}


def numbers(text: str) -> set[str]:
    """Numbers as written, thousands separators dropped: '1,200' and '1200' are one number."""
    return {match.replace(",", "") for match in _NUMBER.findall(text)}


def claims(answer: str) -> list[str]:
    """The answer's sentences that claim something (hold a content word or a number)."""
    return [part.strip() for part in _SENTENCE_END.split(answer)
            if part.strip() and (content_words(part) or numbers(part))]


@dataclass(frozen=True)
class Support:
    claims: list[str]
    unsupported: list[str]

    @property
    def unsupported_share(self) -> float:
        return len(self.unsupported) / len(self.claims) if self.claims else 0.0


def check_support(answer: str, document: str, question: str = "") -> Support:
    """Every claim of `answer` against the document (and the question, whose words the answer may repeat)."""
    source_words, source_numbers = content_words(f"{document} {question}"), numbers(f"{document} {question}")
    found = claims(answer)
    unsupported = []
    for claim in found:
        words = content_words(claim)
        shared = len(words & source_words) / len(words) if words else 1.0
        if numbers(claim) - source_numbers or shared < SUPPORT_SHARE:
            unsupported.append(claim)
    return Support(found, unsupported)
