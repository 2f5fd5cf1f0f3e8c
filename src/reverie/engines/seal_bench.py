"""The SEAL paper's single-passage table as a resumable experiment: closed-book accuracy on evaluation passages
after an inner loop on each passage plus one condition's self-edit.

Conditions:
- base: no training.
- passage: the passage alone.
- own: the passage plus implications the starting model wrote itself (SEAL before any training).
- teacher: the passage plus the passage's own `completions[0]` (a teacher's implications, GPT-4.1 on SQuAD).
- seal: the passage plus implications written by the trained generator, which is also the model trained on
  them (as in the paper). The generator comes from ReST-EM on the training passages, or is given; it may first be
  warm-started by fine-tuning on a teacher's self-edits of other passages (`warm_start`), then ReST-EM goes on
  from there (zero rounds: the warm start alone).

own and seal sample their evaluation self-edits at the configured temperature, or at the one of several
candidates that did best on the training passages (`temperatures`).

Every trial is journaled as soon as it ends and the generator is checkpointed after each round, so a killed
run resumes where it stopped.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from reverie.artifacts import ArtifactStore
from reverie.config import TrainSettings
from reverie.data.knowledge import Example
from reverie.data.passages import Passage
from reverie.data.self_edits import parse_self_edit, self_edit_examples
from reverie.engines.evaluation import closed_book_qa
from reverie.engines.inner_loop import InnerLoop, generate_self_edits, multi_passage_trial
from reverie.engines.models import reset_lora
from reverie.engines.rest_em import (
    GeneratorRound, RoundSettings, TrialJournal, finished_rounds, fingerprint, read_journal, teach_generator,
    train_generator,
)
from reverie.errors import ReverieError
from reverie.stats import bootstrap_ci

CONDITIONS = ("base", "passage", "own", "teacher", "seal")
MULTI_PREFIX = "cpt"  # journal keys of multi-passage (continued-pretraining) groups: cpt<N>-<condition>/<group>
LoopFactory = Callable[[Path | None], InnerLoop]  # None: the starting model; a path: a stored generator


def warm_started(load_loop: LoopFactory, pairs: list[Example], train: TrainSettings, state: Path,
                 store: ArtifactStore) -> LoopFactory:
    """`load_loop` whose starting model is first fine-tuned on `pairs` (teacher-written self-edits), once: the
    result is stored as an artifact and recorded in `state`/warm-start.jsonl, so a rerun loads it."""
    journal = TrialJournal(state / "warm-start.jsonl",
                           fingerprint([p.to_json() for p in pairs], train.model_dump()))

    def load(directory: Path | None) -> InnerLoop:
        if directory is not None:
            return load_loop(directory)
        if (checkpoint := journal.get("checkpoint")) is not None:
            return load_loop(store.path(checkpoint))
        loop = load_loop(None)
        teach_generator(loop, pairs, train, seed=0)
        with store.stage() as staged:
            loop.save_weights(staged.path)
        journal.add("checkpoint", staged.hash)
        return loop

    return load


def _ci(values: list[float]) -> list[float]:
    interval = bootstrap_ci(values)
    return [interval.low, interval.high]


class SealBench:
    def __init__(
        self,
        load_loop: LoopFactory,
        settings: RoundSettings,
        evaluation: list[Passage],
        training: list[Passage],
        rounds: int,
        state: Path,
        fingerprint_parts: list[object],
        on_round: Callable[[GeneratorRound], None] | None = None,
        generator_dir: Path | None = None,
        warm_start: tuple[list[Example], TrainSettings] | None = None,
        temperatures: list[float] | None = None,
    ):
        """`fingerprint_parts` (the inner loop's settings) guard the journal against reuse with other settings.
        With `generator_dir`, the seal condition uses that stored generator instead of training one; with
        `warm_start` (teacher pairs, their training settings), ReST-EM starts from the generator fine-tuned on them.
        With `temperatures`, own and seal write their evaluation self-edits at the one of them that scored best on
        the training passages (`pick_temperature`), instead of at `settings.temperature`."""
        self.load_loop = load_loop
        self.settings = settings
        self.evaluation = evaluation
        self.training = training
        self.rounds = rounds
        self.state = state
        self.on_round = on_round
        self.generator_dir = generator_dir
        self.warm_start = warm_start
        self.temperatures = temperatures
        extra = [[p.to_json() for p in warm_start[0]], warm_start[1].model_dump()] if warm_start else []
        if temperatures:
            extra += [temperatures, [p.model_dump() for p in training]]
        self.journal = TrialJournal(state / "eval.jsonl",
                                    fingerprint(asdict(settings), *fingerprint_parts, len(evaluation), *extra))
        self._loops: dict[str, InnerLoop] = {}

    def loop(self, which: str) -> InnerLoop:
        """The starting model's inner loop, or ('seal') the trained generator's, built once."""
        if which not in self._loops:
            if which == "seal" and self.generator_dir is not None:
                self._loops[which] = self.load_loop(self.generator_dir)
            elif which == "seal":
                recorded = self.journal.get("rounds")
                if recorded is None:
                    self.journal.add("rounds", self.rounds)
                elif recorded != self.rounds:
                    raise ReverieError(f"{self.journal.path} scored a generator trained for {recorded} ReST-EM rounds, "
                                       f"not {self.rounds}: use another state folder")
                store = ArtifactStore(self.state / "artifacts", self.state / "staging")
                start = self.load_loop
                if self.warm_start is not None:
                    start = warm_started(self.load_loop, *self.warm_start, self.state, store)
                self._loops[which], _ = train_generator(start, self.training, self.settings, self.rounds,
                                                        self.state / "rest-em", store, on_round=self.on_round)
            else:
                self._loops[which] = self.load_loop(None)
        return self._loops[which]

    def _write(self, key: str, loop: InnerLoop, passages: list[Passage], temperature: float) -> list[list[str]]:
        """One sampled self-edit per passage, written by the loop's model at `temperature` (journaled)."""
        if self.journal.get(key) is None:
            reset_lora(loop.model, 0)
            edits = generate_self_edits(loop.model, loop.tokenizer, [(p.title, p.context) for p in passages],
                                        self.settings.style, 1, temperature, self.settings.max_new_tokens)
            self.journal.add(key, [per_passage[0] for per_passage in edits])
        return self.journal.get(key)

    def _pick_candidates(self) -> list[tuple[str, float | None]]:
        return [("passage", None)] + [(str(t), t) for t in self.temperatures or []]

    def pick_temperature(self, condition: str, report: Callable[[str, dict], None] = lambda key, record: None
                         ) -> float:
        """The sampling temperature, of `temperatures`, whose self-edits (one per training passage, by the
        condition's writer) scored best in the inner loop on the training passages: a strategy choice made on
        training data only, never on the evaluation passages. Journaled, with passage-only on the same passages."""
        loop = self.loop("seal" if condition == "seal" else "start")
        for name, temperature in self._pick_candidates():
            edits = ([[] for _ in self.training] if temperature is None else
                     self._write(f"pick/{condition}/{name}/edits", loop, self.training, temperature))
            for i, passage in enumerate(self.training):
                key = f"pick/{condition}/{name}/{i}"
                if self.journal.get(key) is None:
                    trial = loop.trial(self_edit_examples(passage.title, passage.context, edits[i]),
                                       passage.qa_pairs(), seed=i)
                    self.journal.add(key, {"accuracy": trial.accuracy, "sequences": len(edits[i]) + 1,
                                           "seconds": trial.train_seconds + trial.eval_seconds})
                    report(key, self.journal.get(key))
        return self._picked(condition)["temperature"]

    def _picked(self, condition: str) -> dict | None:
        """The journaled choice of `pick_temperature`: mean training-passage accuracy per candidate (passage-only
        too) and the temperature chosen (ties: the first listed); None until every trial has run."""
        means = {}
        for name, _ in self._pick_candidates():
            records = [self.journal.get(f"pick/{condition}/{name}/{i}") for i in range(len(self.training))]
            if not all(records):
                return None
            means[name] = statistics.fmean(r["accuracy"] for r in records)
        return {"train_accuracy": means,
                "temperature": max(self.temperatures or [], key=lambda t: means[str(t)])}

    def _self_edits(self, condition: str, loop: InnerLoop) -> list[list[str]]:
        """One sampled self-edit per evaluation passage, written by the loop's model (journaled)."""
        temperature = self.pick_temperature(condition) if self.temperatures else self.settings.temperature
        return self._write(f"edits/{condition}", loop, self.evaluation, temperature)

    def _condition(self, condition: str) -> tuple[InnerLoop, list[list[str]]]:
        """The inner loop a condition runs on, and its self-edit items per evaluation passage."""
        if condition not in CONDITIONS:
            raise ReverieError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
        if condition == "teacher" and not all(p.completions for p in self.evaluation):
            raise ReverieError("the teacher condition needs `completions` on every evaluation passage")
        loop = self.loop("seal" if condition == "seal" else "start")
        if condition in ("own", "seal"):
            return loop, self._self_edits(condition, loop)
        if condition == "teacher":
            return loop, [parse_self_edit(p.completions[0]) for p in self.evaluation]
        return loop, [[] for _ in self.evaluation]

    def run(self, condition: str, report: Callable[[str, dict], None] = lambda key, record: None) -> None:
        """Score every evaluation passage under `condition`; `report` is called after each trial."""
        loop, items = self._condition(condition)
        for i, passage in enumerate(self.evaluation):
            key = f"{condition}/{i}"
            if self.journal.get(key) is not None:
                continue
            if condition == "base":
                reset_lora(loop.model, i)
                scores, _ = closed_book_qa(loop.model, loop.tokenizer, passage.qa_pairs(), loop.max_new_tokens,
                                           loop.batch_size, loop.grader)
                record = {"accuracy": scores["accuracy"], "f1": scores["f1"], "seconds": 0.0}
            else:
                examples = self_edit_examples(passage.title, passage.context, items[i])
                trial = loop.trial(examples, passage.qa_pairs(), seed=i)
                record = {"accuracy": trial.accuracy, "f1": trial.f1, "sequences": len(examples),
                          "truncated": trial.truncated, "seconds": trial.train_seconds + trial.eval_seconds}
            self.journal.add(key, record)
            report(key, record)

    def run_multi_passage(self, condition: str, group: int,
                          report: Callable[[str, dict], None] = lambda key, record: None) -> None:
        """SEAL's continued-pretraining variant: one adapter per `group` evaluation passages, trained on all of
        them with the condition's self-edits and graded on all their questions."""
        if condition == "base":
            raise ReverieError("the multi-passage variant trains: choose passage, own, teacher or seal")
        loop, items = self._condition(condition)
        for start in range(0, len(self.evaluation), group):
            key = f"{MULTI_PREFIX}{group}-{condition}/{start // group}"
            if self.journal.get(key) is not None:
                continue
            trial = multi_passage_trial(loop, self.evaluation[start : start + group], items[start : start + group],
                                        seed=start)
            record = {"accuracy": trial.accuracy, "questions": len(trial.answers),
                      "correct": [float(a.correct) for a in trial.answers],
                      "seconds": trial.train_seconds + trial.eval_seconds}
            self.journal.add(key, record)
            report(key, record)

    def _items_per_self_edit(self, round_number: int) -> float:
        edits = read_journal(self.state / "rest-em" / f"round-{round_number}.jsonl").get("self-edits", [])
        samples = [len(items) for per_passage in edits for items in per_passage]
        return statistics.fmean(samples) if samples else 0.0

    def summary(self) -> dict:
        """Means with 95% bootstrap intervals for every finished condition, paired differences, round figures."""
        n = len(self.evaluation)
        rows = {c: [self.journal.get(f"{c}/{i}") for i in range(n)] for c in CONDITIONS}
        picks = {c: picked for c in ("own", "seal") if self.temperatures and (picked := self._picked(c))}
        done = {c: r for c, r in rows.items() if all(r)}
        rounds = [{"round": r.round, **asdict(r.result), "items_per_self_edit": self._items_per_self_edit(r.round)}
                  for r in finished_rounds(self.state / "rest-em")]
        result: dict = {"eval_passages": n, "train_passages": len(self.training),
                        "questions": sum(len(p.questions) for p in self.evaluation), "conditions": {},
                        "differences": {}, "rounds": rounds, "multi_passage": {}, "temperature_picks": picks}
        for condition, records in done.items():
            accuracy = [r["accuracy"] for r in records]
            result["conditions"][condition] = {
                "accuracy": statistics.fmean(accuracy), "ci95": _ci(accuracy),
                "f1": statistics.fmean(r["f1"] for r in records),
                "s_per_inner_loop": statistics.fmean(r["seconds"] for r in records), "per_passage": accuracy,
            }
            if condition != "base":  # every trained sequence but the passage is a self-edit item
                result["conditions"][condition]["items_per_self_edit"] = statistics.fmean(
                    r["sequences"] - 1 for r in records)
        per_question: dict[str, list[float]] = {}
        for key, record in sorted(self.journal.records.items()):  # multi-passage groups: over all their questions
            if key.startswith(MULTI_PREFIX):
                name = key.split("/")[0]
                total = result["multi_passage"].setdefault(name, {"correct": 0.0, "questions": 0, "groups": 0})
                total["correct"] += record["accuracy"] * record["questions"]
                total["questions"] += record["questions"]
                total["groups"] += 1
                per_question.setdefault(name, []).extend(record.get("correct", []))
        for name, total in result["multi_passage"].items():
            total["accuracy"] = total["correct"] / max(1, total["questions"])
            if len(per_question[name]) == total["questions"]:  # journals from before per-question records lack it
                total["ci95"] = _ci(per_question[name])
        for name, correct in per_question.items():  # paired over questions, against the same grouping's passage row
            group, condition = name[len(MULTI_PREFIX):].split("-", 1)
            baseline = per_question.get(f"{MULTI_PREFIX}{group}-passage")
            if condition != "passage" and baseline and len(baseline) == len(correct):
                diff = [a - b for a, b in zip(correct, baseline)]
                result["differences"][f"{name} - passage"] = {"mean": statistics.fmean(diff), "ci95": _ci(diff)}
        for a, b in (("seal", "passage"), ("seal", "own"), ("own", "passage"), ("teacher", "passage")):
            if a in done and b in done:
                diff = [x["accuracy"] - y["accuracy"] for x, y in zip(done[a], done[b])]
                result["differences"][f"{a} - {b}"] = {"mean": statistics.fmean(diff), "ci95": _ci(diff)}
        return result
