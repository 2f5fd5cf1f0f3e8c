"""Preference pairs made inside reverie rather than read from a file: from serving feedback, the red-team library
and Dream's votes. Pure functions: the caller passes the model's answers in, so this layer needs no torch, and
the pairs go through `preference_ingest.screen_pairs` like a file's before anything trains on them."""

from __future__ import annotations

from collections import Counter
from typing import Callable

from reverie.data.feedback import Feedback
from reverie.data.preference import PreferencePair
from reverie.data.records import Rejected, content_id
from reverie.data.redteam import REFUSAL, RedTeamItem
from reverie.data.splits import safety_train
from reverie.data.text import normalize

REDTEAM_STEP = "redteam pairs"


def feedback_pairs(rows: list[Feedback]) -> list[PreferencePair]:
    """A thumbs-down with a correction gives (correction > answer); a thumbs-up and a thumbs-down answer to the
    same prompt give (up answer > down answer). `origin` names the feedback ids; the same pair from several
    rows comes once, naming them all. A pair that teaches nothing (a correction that repeats the answer) is left
    for `screen_pairs` to quarantine with its reason."""
    pairs: dict[str, PreferencePair] = {}
    ids: dict[str, list[str]] = {}

    def add(prompt: str, chosen: str, rejected: str, rows: list[Feedback]) -> None:
        pair = PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, source="feedback")
        pairs.setdefault(pair.id, pair)
        known = ids.setdefault(pair.id, [])
        known += [row.id for row in rows if row.id not in known]

    by_prompt: dict[str, dict[str, list[Feedback]]] = {}
    for row in rows:
        if row.rating == "down" and row.correction and row.correction.strip():
            add(row.prompt, row.correction, row.answer, [row])
        by_prompt.setdefault(normalize(row.prompt), {"up": [], "down": []})[row.rating].append(row)
    for ratings in by_prompt.values():
        for up in ratings["up"]:
            for down in ratings["down"]:
                add(up.prompt, up.answer, down.answer, [up, down])
    return [pair.model_copy(update={"origin": ",".join(ids[key])}) for key, pair in pairs.items()]


def redteam_pairs(items: list[RedTeamItem], answers: dict[str, str], is_refusal: Callable[[str], bool],
                  ) -> tuple[list[PreferencePair], list[Rejected]]:
    """From the training half of the library only (never the Gate's held-out half): for a request that must be
    refused, the refusal > the model's own compliant answer; for a safe look-alike, the model's own helpful answer >
    the refusal, so that alignment does not buy over-refusal. `answers` maps item ids to the model's answers; an
    item whose answer is missing, empty, or already what the pair would teach is returned as Rejected."""
    pairs: list[PreferencePair] = []
    skipped: list[Rejected] = []
    for item in safety_train(items):
        row = item.model_dump()
        answer = answers.get(item.id)
        if answer is None or not answer.strip():
            reason = "no answer from the model" if answer is None else "the model's answer is empty"
            skipped.append(Rejected(origin=item.id, step=REDTEAM_STEP, reason=reason, row=row))
            continue
        refuses = is_refusal(answer)
        if item.must_refuse and refuses:
            skipped.append(Rejected(origin=item.id, step=REDTEAM_STEP, reason="the model already refuses this "
                                    "harmful request: nothing to learn", row=row))
            continue
        if not item.must_refuse and refuses:
            skipped.append(Rejected(origin=item.id, step=REDTEAM_STEP, reason="the model refuses this safe "
                                    "look-alike: no helpful answer of its own to prefer", row=row))
            continue
        chosen, rejected = (REFUSAL, answer) if item.must_refuse else (answer, REFUSAL)
        pairs.append(PreferencePair(prompt=item.prompt, chosen=chosen, rejected=rejected, source="redteam",
                                    bucket="safety", origin=item.id,
                                    meta={"category": item.category, "must_refuse": item.must_refuse}))
    return pairs, skipped


def vote_pairs(question: str, votes: list[str], winner: str) -> list[PreferencePair]:
    """Self-consistency voting: the majority answer over each distinct minority answer, in its most common
    spelling (answers that normalise alike are one answer, as data/synthetic.majority_vote counts them), with
    the vote counts in meta."""
    counts = Counter(normalize(vote) for vote in votes)
    spelled = {answer: Counter(v for v in votes if normalize(v) == answer).most_common(1)[0][0] for answer in counts}
    won, origin = normalize(winner), f"vote:{content_id(question)}"
    return [PreferencePair(prompt=question, chosen=winner, rejected=spelled[answer], source="dream-vote", origin=origin,
                           meta={"votes": counts[won], "rejected_votes": votes_for, "of": len(votes)})
            for answer, votes_for in counts.items() if answer != won and answer]
