"""Chain-of-thought self-consistency as text: the prompts that ask for reasoning ending in "Answer: X", the parser
of that final answer, and the vote over several reasoning paths per question that decides what is kept (one
agreeing path as an SFT example), what becomes preference pairs (a majority path over each minority answer's
path) and what is quarantined with its reason. No torch: the caller passes the sampled paths in."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from reverie.data.knowledge import QA, Document, Example
from reverie.data.multiple_choice import ChoiceItem
from reverie.data.preference import PreferencePair
from reverie.data.quality import check_text
from reverie.data.records import Rejected
from reverie.data.synthetic import supported_by
from reverie.data.text import contains_phrase, normalize

INSTRUCTION = "Think step by step, then give the final answer on its own line as 'Answer: <answer>'."
CHOICE_INSTRUCTION = ("Think step by step, then give the letter of the right choice on its own line as "
                      "'Answer: <letter>'.")
MAX_ANSWER_WORDS = 12  # a longer "final answer" is a sentence that happens to contain the word, not an answer
ANSWER_CUE = "\n\nAnswer:"  # continued greedily after a path that has no final answer (answer extraction)
PAIR_SOURCE = "dream-cot-vote"
# The last "Answer:" (or "Final answer:"), markdown emphasis around it allowed, and the rest of its line.
_FINAL = re.compile(r"\banswer\b[*_ ]*[:：][*_ ]*(?P<answer>[^\n]*)", re.IGNORECASE)
_LETTER = re.compile(r"^\(?(?P<letter>[A-Z])\)?(?:[.):,]|\s|$)")
_TRIM = " \t*_\"'`.,;!"
_GSM8K_ANSWER = "####"  # GSM8K's solutions end with "#### <answer>"


@dataclass(frozen=True)
class ReasoningItem:
    """One question to reason about: how it is asked when sampling (`sample_prompt`, open-book for a training
    question) and when trained on (`prompt`, closed-book), the answer known for it, and what its vote must pass."""

    id: str
    source: str  # "knowledge" (a training question) or "reasoning" (the configured reasoning set)
    prompt: str
    sample_prompt: str
    known: str  # the training answer, the reasoning set's answer, or the label's letter
    choices: tuple[str, ...] = ()  # multiple choice: the choices, lettered A, B, ...
    document: str | None = None  # a training question's document: the majority answer must occur in it


def cot_prompt(question: str, choices: tuple[str, ...] = (), text: str | None = None) -> str:
    """The question with its choices lettered (multiple choice), after the text to read (open-book), and the
    instruction to reason before a final 'Answer:' line."""
    lines = [f"Read the text.\n\nText: {text}\n"] if text is not None else []
    lines.append(f"Question: {question}")
    lines += [f"{chr(65 + index)}. {choice}" for index, choice in enumerate(choices)]
    lines.append(CHOICE_INSTRUCTION if choices else INSTRUCTION)
    return "\n".join(lines)


def knowledge_items(pairs: list[tuple[Document, QA]]) -> list[ReasoningItem]:
    """The cycle's training questions (data/splits.knowledge_train), sampled with their document in view."""
    return [ReasoningItem(id=f"knowledge/{document.id}/{index}", source="knowledge", prompt=cot_prompt(qa.question),
                          sample_prompt=cot_prompt(qa.question, text=document.text), known=qa.answer,
                          document=document.text)
            for index, (document, qa) in enumerate(pairs)]


def choice_item(index: int, item: ChoiceItem) -> ReasoningItem:
    """A multiple-choice item (PIQA, ARC) of the reasoning set: the known answer is the label's letter."""
    prompt = cot_prompt(item.goal, item.choices)
    return ReasoningItem(id=f"reasoning/{index}", source="reasoning", prompt=prompt, sample_prompt=prompt,
                         known=chr(65 + item.label), choices=item.choices)


def short_answer_item(index: int, question: str, answer: str) -> ReasoningItem:
    """A short-answer item {question, answer} of the reasoning set; a GSM8K worked solution counts by what follows
    its '####'."""
    known = answer.rsplit(_GSM8K_ANSWER, 1)[1].strip() if _GSM8K_ANSWER in answer else answer.strip()
    prompt = cot_prompt(question)
    return ReasoningItem(id=f"reasoning/{index}", source="reasoning", prompt=prompt, sample_prompt=prompt, known=known)


def final_answer(path: str, choices: tuple[str, ...] = ()) -> tuple[str | None, str | None]:
    """(answer, None) for a path that ends in a usable 'Answer:' line, else (None, why not). A multiple-choice
    answer is the letter it names (or the choice it spells out)."""
    found = list(_FINAL.finditer(path))
    if not found:
        return None, "no final 'Answer:' line"
    answer = found[-1]["answer"].strip(_TRIM)
    if not answer:
        return None, "the 'Answer:' line is empty"
    if len(answer.split()) > MAX_ANSWER_WORDS:
        return None, f"the final answer is {len(answer.split())} words long (at most {MAX_ANSWER_WORDS})"
    if not choices:
        return answer, None
    letters = [chr(65 + index) for index in range(len(choices))]
    if (match := _LETTER.match(answer)) and match["letter"] in letters:
        return match["letter"], None
    spelled = [letter for letter, choice in zip(letters, choices) if normalize(choice) == normalize(answer)]
    if spelled:
        return spelled[0], None
    return None, f"the final answer {answer!r} names none of the choices {letters[0]}-{letters[-1]}"


def needs_extraction(path: str) -> bool:
    """Whether a path gave no final answer at all (no 'Answer:' line, or an empty one): small models often reason
    without ever writing the line, and the answer is then asked for after the path (zero-shot chain of thought's
    second, answer-extraction step, Kojima et al. 2022). A long or off-choice answer is the path's own, kept."""
    found = list(_FINAL.finditer(path))
    return not found or not found[-1]["answer"].strip(_TRIM)


def extraction_prompt(path: str) -> str:
    """The text that follows the question, in the assistant's turn, when its final answer is asked for."""
    return path.rstrip() + ANSWER_CUE


def with_extracted(path: str, extracted: str) -> str:
    """The path ending in the answer asked for after it: what is voted on and, when kept, trained on."""
    line = extracted.strip().split("\n", 1)[0].strip() if extracted.strip() else ""
    return f"{extraction_prompt(path)} {line}" if line else path


def agrees(answer: str, item: ReasoningItem) -> bool:
    """Whether an answer is the item's known one: the same letter, or containing the known answer's words."""
    return answer == item.known if item.choices else contains_phrase(answer, item.known)


@dataclass
class VoteOutcome:
    """What one item's vote gave: its kept example and pairs, or the reason it was quarantined, and the figures
    the strategy reports (agreement: the top answer's share of every sampled path)."""

    item: ReasoningItem
    agreement: float
    parsed: int
    winner: str | None = None  # the majority answer, whether kept or not
    example: Example | None = None
    pairs: list[PreferencePair] = field(default_factory=list)
    quarantined: list[Rejected] = field(default_factory=list)


def vote(item: ReasoningItem, paths: list[str], min_agreement: float, require_known: bool) -> VoteOutcome:
    """Vote over an item's sampled reasoning paths by their final answers.

    A path without a usable final answer, or one that breaks the quality rules, is quarantined and casts no
    vote, but still counts among the paths an answer's share is taken of, so five garbled paths and one clean
    one are no agreement. The majority answer is kept when its share reaches `min_agreement` (a tie never is),
    it occurs in the item's document (a training question), and, with `require_known`, it is the known answer;
    the first path that gave it becomes the SFT example, and it is preferred over the first path of each
    minority answer."""
    quarantined: list[Rejected] = []
    voting: dict[str, list[str]] = {}  # normalised answer -> its paths, in sampling order
    spellings: Counter[tuple[str, str]] = Counter()
    for path in paths:
        answer, problem = final_answer(path, item.choices)
        problem = problem or check_text(path)
        if answer is None or problem is not None:
            quarantined.append(_rejected(item, "dream cot parse" if answer is None else "dream quality gate",
                                         str(problem), {"path": path}))
            continue
        key = answer if item.choices else normalize(answer)
        voting.setdefault(key, []).append(path)
        spellings[key, answer] += 1
    counts = Counter({key: len(votes) for key, votes in voting.items()}).most_common(2)
    share = counts[0][1] / len(paths) if counts else 0.0
    outcome = VoteOutcome(item, agreement=share, parsed=sum(len(v) for v in voting.values()),
                          quarantined=quarantined)
    if not counts:
        outcome.quarantined.append(_rejected(item, "dream cot vote", "no path gave a usable final answer"))
        return outcome
    if len(counts) == 2 and counts[0][1] == counts[1][1]:
        outcome.quarantined.append(_rejected(item, "dream cot vote", f"tie between {counts[0][0]!r} and "
                                             f"{counts[1][0]!r} ({counts[0][1]} paths each)"))
        return outcome
    key = counts[0][0]
    winner = Counter({answer: n for (of, answer), n in spellings.items() if of == key}).most_common(1)[0][0]
    outcome.winner = winner
    reason = None
    if share < min_agreement - 1e-9:
        reason = f"agreement {share:.2f} is below dream.cot.min_agreement {min_agreement:g}"
    elif item.document is not None and not supported_by(winner, item.document):
        reason = f"the majority answer {winner!r} does not occur in the document"
    elif require_known and not agrees(winner, item):
        reason = f"the majority answer {winner!r} is not the known answer {item.known!r} (dream.cot.require_known)"
    if reason is not None:
        outcome.quarantined.append(_rejected(item, "dream cot vote", reason, {"answer": winner}))
        return outcome
    chosen = voting[key][0]
    outcome.example = Example(prompt=item.prompt, completion=chosen)
    outcome.pairs = [PreferencePair(prompt=item.prompt, chosen=chosen, rejected=minority[0], source=PAIR_SOURCE,
                                    bucket="reasoning", origin=f"cot:{item.id}",
                                    meta={"votes": len(voting[key]), "rejected_votes": len(minority),
                                          "of": len(paths)})
                     for other, minority in voting.items() if other != key]
    return outcome


def _rejected(item: ReasoningItem, step: str, reason: str, extra: dict | None = None) -> Rejected:
    return Rejected(origin=item.id, step=step, reason=reason, row={"prompt": item.prompt} | (extra or {}))


def vote_metrics(outcomes: list[VoteOutcome], samples: int) -> dict[str, float]:
    """Per source (knowledge, reasoning): items, mean agreement, kept share, how often the majority answer is
    the known one (over items with a majority) and how often a kept one is; and the paths parsed overall."""
    metrics: dict[str, float] = {"dream_paths": float(samples * len(outcomes)),
                                 "dream_paths_parsed": float(sum(o.parsed for o in outcomes)),
                                 "dream_vote_pairs": float(sum(len(o.pairs) for o in outcomes))}
    for source in sorted({o.item.source for o in outcomes}):
        mine = [o for o in outcomes if o.item.source == source]
        voted = [o for o in mine if o.winner is not None]
        kept = [o for o in mine if o.example is not None]
        metrics |= {f"dream_{source}_questions": float(len(mine)),
                    f"dream_{source}_agreement": sum(o.agreement for o in mine) / len(mine),
                    f"dream_{source}_voted": float(len(voted)),
                    f"dream_{source}_kept": float(len(kept)),
                    f"dream_{source}_kept_share": len(kept) / len(mine)}
        if voted:  # undefined without a vote: left out rather than reported as 0
            metrics[f"dream_{source}_vote_accuracy"] = sum(agrees(str(o.winner), o.item) for o in voted) / len(voted)
        if kept:
            metrics[f"dream_{source}_kept_accuracy"] = sum(agrees(str(o.winner), o.item) for o in kept) / len(kept)
    return metrics
