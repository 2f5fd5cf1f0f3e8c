"""The splits of every evaluation source, in one place: what may train, what may decide, what only the Gate reads.

| source | train (Learn, Dream) | probe (Compress, Dream decide on it) | held out (the Gate only) |
|---|---|---|---|
| a knowledge drop, memory documents | documents, train_qa | train_qa: is what Learn taught still answered? | eval_qa |
| the general suite (eval.general_suite) | - | - | every item |
| advbench, a red-team library | the other half: refusal pairs | - | half of the items, by content hash |
| xstest | the other half: safe look-alikes answered (DPO pairs) | - | half of the items, by content hash |
| preference pairs, by prompt hash | half: DPO, the policy's reward model; 3/10: the judge's | - | 1/5: `rm eval` |

The preference pairs have two training splits so that the Gate's judge never learned from the pairs the policy
was optimised on (the policy could otherwise win by pleasing one model's quirks). A knowledge drop has no third
split, so its probe is its training questions. A cycle names the phase that reads (`reading_as`); a held-out
read while any phase but the Gate runs raises `HeldOutRead`, so a strategy that would select a model on the
test set fails loudly instead of scoring well. Outside a cycle (`reverie eval`, `reverie rm eval`) nobody
selects, and reads are allowed. Data hygiene is the one other reader: `exclusion_texts` gives held-out text only
so that training data overlapping it can be removed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Literal, TypeVar

from reverie.data.knowledge import QA, Document, Knowledge

if TYPE_CHECKING:
    from reverie.data.multiple_choice import ChoiceItem

Split = Literal["train", "probe", "held_out"]
PreferenceSplit = Literal["policy", "judge", "held_out"]
PREFERENCE_SHARES = {"policy": 0.5, "judge": 0.3, "held_out": 0.2}  # of the prompts, by content hash
PREFERENCE_SPLIT_RULE = "prompt-hash"  # what a reward model's run key records: a changed rule trains anew
HELD_OUT_READERS = frozenset({"gate"})
SAFETY_HELD_OUT_SHARE = 0.5  # of a safety file's items, by content hash
Item = TypeVar("Item")

_reader: ContextVar[str | None] = ContextVar("held_out_reader", default=None)


class HeldOutRead(RuntimeError):
    """A phase other than the Gate asked for held-out items: a bug in that phase, never a user's mistake."""


@contextmanager
def reading_as(phase: str) -> Iterator[None]:
    """Every read inside the block is made by `phase` (the cycle wraps each phase run in one)."""
    token = _reader.set(phase)
    try:
        yield
    finally:
        _reader.reset(token)


def check_reader(source: str) -> None:
    """Refuse a held-out read of `source` by a phase that trains or selects."""
    reader = _reader.get()
    if reader is not None and reader not in HELD_OUT_READERS:
        raise HeldOutRead(f"{reader} read the held-out split of {source}; only the Gate may "
                          "(train on the train split, decide on the probe split: reverie/data/splits.py)")


def knowledge_train(knowledge: Knowledge) -> list[tuple[Document, QA]]:
    return [(doc, qa) for doc in knowledge.documents for qa in doc.train_qa]


def knowledge_probe(knowledge: Knowledge) -> list[tuple[str, str]]:
    """(question, answer) pairs a phase may decide on: the training questions."""
    return [(qa.question, qa.answer) for _, qa in knowledge_train(knowledge)]


def knowledge_held_out(knowledge: Knowledge) -> list[tuple[Document, QA]]:
    check_reader(f"knowledge {knowledge.name!r}")
    return [(doc, qa) for doc in knowledge.documents for qa in doc.eval_qa]


def general_held_out(items: Sequence[ChoiceItem]) -> list[ChoiceItem]:
    check_reader("the general suite")
    return list(items)


def in_safety_held_out(item_id: str) -> bool:
    """Whether a safety item (id: the hex content hash of its normalised prompt) is in the evaluation half."""
    return int(item_id[:8], 16) / 16**8 < SAFETY_HELD_OUT_SHARE


def safety_held_out(items: Sequence[Item], source: str) -> list[Item]:
    """The evaluation half of a safety file's items (each with an `id`)."""
    check_reader(source)
    return [item for item in items if in_safety_held_out(item.id)]  # type: ignore[attr-defined]


def safety_train(items: Sequence[Item]) -> list[Item]:
    """The other half: items that may become training pairs."""
    return [item for item in items if not in_safety_held_out(item.id)]  # type: ignore[attr-defined]


def preference_split(prompt_id: str) -> PreferenceSplit:
    """Which split a preference pair falls in, by the content hash of its prompt: every comparison of one prompt
    (AlpacaEval pits one reference answer against a dozen models) lands in the same split, so no split learns
    a prompt another is scored on."""
    position, edge = int(prompt_id[:8], 16) / 16**8, 0.0
    for split, share in PREFERENCE_SHARES.items():
        edge += share
        if position < edge:
            return split  # type: ignore[return-value]
    return "held_out"


def preference_pairs(pairs: Sequence[Item], split: PreferenceSplit) -> list[Item]:
    """The pairs (each with a `prompt_id()`) of one split; the held-out one only outside a cycle or by the Gate."""
    if split == "held_out":
        check_reader("the preference pairs")
    return [pair for pair in pairs if preference_split(pair.prompt_id()) == split]  # type: ignore[attr-defined]


def exclusion_texts(knowledge: Knowledge, general: Sequence[ChoiceItem],
                    preference: Sequence[str] = ()) -> dict[str, str]:
    """Held-out text keyed for reports, only to remove training data that overlaps it (hygiene): the knowledge
    questions with their answers, the general suite's goals, the preference suite's prompts."""
    items = {f"{doc.id}/eval_qa/{i}": f"{qa.question} {qa.answer}"
             for doc in knowledge.documents for i, qa in enumerate(doc.eval_qa)}
    return (items | {f"general/{i}": item.goal for i, item in enumerate(general)}
            | {f"preference/{i}": prompt for i, prompt in enumerate(preference)})
