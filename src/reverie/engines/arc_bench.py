"""The SEAL paper's few-shot ARC table as a resumable experiment: exact-match success on evaluation tasks.

Conditions:
- icl: in-context learning only (the demonstrations in the prompt, no training).
- ttt: test-time training with self-edits the starting model wrote (SEAL before ReST-EM).
- seal: test-time training with self-edits written by the generator after ReST-EM on the training tasks.
- oracle: every configuration of a fixed search space run on every task; the row is the single configuration
  that solves the most tasks. It is chosen on the evaluation tasks themselves: an upper reference for what one
  fixed configuration can do with this model, never a model selection. The tasks it solves are the subset on
  which the other conditions are also reported.

Rates are given per self-edit (the share of sampled self-edits whose adapter solved its task, the paper's
figure) and per task (a task counts when any of its k self-edits solved it), with 95% intervals.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Callable

from reverie.artifacts import ArtifactStore
from reverie.config import ArcSealSettings
from reverie.data.arc import ArcTask, partial_credit
from reverie.data.arc_self_edit import FAMILY_FLAGS, ArcSelfEdit, DataGeneration, TrainingChoice
from reverie.engines.arc_rest_em import journaled_trials, train_arc_generator
from reverie.engines.arc_ttt import ArcInnerLoop, ArcTrial
from reverie.engines.rest_em import GeneratorRound, TrialJournal, fingerprint
from reverie.errors import ReverieError
from reverie.stats import bootstrap_ci, wilson_interval

ARC_CONDITIONS = ("icl", "ttt", "seal", "oracle")
ORACLE_FAMILIES = ((), ("basic",), ("basic", "size"), ("basic", "size", "chain", "repeat"))
LoopFactory = Callable[[Path | None], ArcInnerLoop]  # None: the starting model; a path: a stored generator


def oracle_configurations(families: tuple[tuple[str, ...], ...] = ORACLE_FAMILIES,
                          learning_rates: tuple[float, ...] = (1e-3, 3e-3), epochs: int = 3) -> list[ArcSelfEdit]:
    """The oracle's search space: augmentation families x loss strategy x learning rate."""
    flags = {family: key for key, family in FAMILY_FLAGS.items()}
    return [ArcSelfEdit(data_generation=DataGeneration(**{flags[f]: True for f in families}),
                        training=TrainingChoice(strategy=strategy, learning_rate=lr, num_train_epochs=epochs))
            for families, strategy, lr in itertools.product(
                families, ("train_using_output_tokens", "train_using_all_tokens"), learning_rates)]


def _partial_credit(task: ArcTask, trial: ArcTrial) -> tuple[float, float]:
    """(right shape, cell accuracy) of a trial's predictions, averaged over the task's test outputs."""
    if not trial.predictions:
        return 0.0, 0.0
    credit = [partial_credit(text, pair.output) for text, pair in zip(trial.predictions, task.test)]
    return statistics.fmean(shape for shape, _ in credit), statistics.fmean(cells for _, cells in credit)


def _rates(tasks: list[ArcTask], per_task: list[list[ArcTrial]]) -> dict:
    """Per-self-edit and per-task success with 95% intervals (bootstrap over tasks; Wilson for a share of tasks),
    and the partial credit of the predictions."""
    fractions = [sum(t.solved for t in trials) / len(trials) for trials in per_task]
    credit = [_partial_credit(task, t) for task, trials in zip(tasks, per_task) for t in trials]
    tasks_solved = sum(any(t.solved for t in trials) for trials in per_task)
    interval = bootstrap_ci(fractions)
    task_interval = wilson_interval(tasks_solved, len(per_task))
    flat = [t for trials in per_task for t in trials]
    return {
        "per_self_edit": statistics.fmean(fractions), "per_self_edit_ci95": [interval.low, interval.high],
        "per_task": tasks_solved / len(per_task), "per_task_ci95": [task_interval.low, task_interval.high],
        "tasks": len(per_task), "tasks_solved": tasks_solved, "self_edits": len(flat),
        "valid": sum(t.valid for t in flat), "solved": sum(t.solved for t in flat),
        "s_per_trial": statistics.fmean(t.seconds for t in flat),
        "right_shape": statistics.fmean(c[0] for c in credit), "cell_accuracy": statistics.fmean(c[1] for c in credit),
    }


class ArcBench:
    def __init__(
        self,
        load_loop: LoopFactory,
        settings: ArcSealSettings,
        evaluation: list[ArcTask],
        training: list[ArcTask],
        state: Path,
        oracle: list[ArcSelfEdit] | None = None,
        on_round: Callable[[GeneratorRound], None] | None = None,
        generator_dir: Path | None = None,
        report: Callable[[str, ArcTrial], None] = lambda key, trial: None,
    ):
        """With `generator_dir`, the seal condition uses that stored generator instead of training one."""
        self.load_loop = load_loop
        self.settings = settings
        self.evaluation = evaluation
        self.training = training
        self.state = state
        self.oracle = oracle if oracle is not None else oracle_configurations()
        self.on_round = on_round
        self.generator_dir = generator_dir
        self.report = report
        self.journal = TrialJournal(state / "eval.jsonl", fingerprint(
            settings.model_dump(), [t.model_dump() for t in evaluation], [t.model_dump() for t in training],
            [c.model_dump() for c in self.oracle], str(generator_dir)))
        self._loops: dict[str, ArcInnerLoop] = {}

    def loop(self, which: str) -> ArcInnerLoop:
        """The starting model's loop, or ('seal') the trained generator's, built once."""
        if which not in self._loops:
            if which == "seal" and self.generator_dir is not None:
                self._loops[which] = self.load_loop(self.generator_dir)
            elif which == "seal":
                if not self.training:
                    raise ReverieError("the seal condition trains a generator: give training tasks")
                store = ArtifactStore(self.state / "artifacts", self.state / "staging")
                self._loops[which], _ = train_arc_generator(
                    self.load_loop, self.training, self.settings, self.settings.rounds, self.state / "rest-em", store,
                    on_round=self.on_round, report=self.report)
            else:
                self._loops[which] = self.load_loop(None)
        return self._loops[which]

    def _trials(self, condition: str) -> list[list[ArcTrial]]:
        """Every finished trial of a condition per evaluation task (run nothing)."""
        if condition == "icl":
            keys = [[f"icl/{t.id}"] for t in self.evaluation]
        elif condition == "oracle":
            keys = [[f"oracle/{c}/{t.id}" for c in range(len(self.oracle))] for t in self.evaluation]
        else:
            keys = [[f"{condition}/{t.id}/{j}" for j in range(self.settings.samples)] for t in self.evaluation]
        return [[ArcTrial(**self.journal.get(k)) for k in per_task if self.journal.get(k) is not None]
                for per_task in keys]

    def run(self, condition: str) -> None:
        """Run every trial of `condition` not yet in the journal."""
        if condition not in ARC_CONDITIONS:
            raise ReverieError(f"unknown condition {condition!r}; choose from {', '.join(ARC_CONDITIONS)}")
        if condition == "icl":
            loop = self.loop("start")
            for task in self.evaluation:
                key = f"icl/{task.id}"
                if self.journal.get(key) is None:
                    trial = loop.in_context(task)
                    self.journal.add(key, trial.to_json())
                    self.report(key, trial)
        elif condition == "oracle":
            loop = self.loop("start")
            for c, config in enumerate(self.oracle):
                for task in self.evaluation:
                    key = f"oracle/{c}/{task.id}"
                    if self.journal.get(key) is None:
                        trial = loop.run(task, config, seed=c)
                        self.journal.add(key, trial.to_json())
                        self.report(key, trial)
        else:
            loop = self.loop("seal" if condition == "seal" else "start")
            key = f"edits/{condition}"
            if self.journal.get(key) is None:
                self.journal.add(key, loop.write_self_edits(self.evaluation, self.settings.samples))
            journaled_trials(loop, self.journal, condition, self.evaluation, self.journal.get(key), 0, self.report)

    def best_oracle(self) -> int | None:
        """The index of the configuration that solved the most evaluation tasks (the first on a tie)."""
        per_task = self._trials("oracle")
        if not per_task or any(len(trials) != len(self.oracle) for trials in per_task):
            return None
        solved = [sum(trials[c].solved for trials in per_task) for c in range(len(self.oracle))]
        return solved.index(max(solved))

    def summary(self) -> dict:
        """Rates for every finished condition, on all evaluation tasks and on the oracle's subset."""
        result: dict = {"evaluation_tasks": len(self.evaluation), "training_tasks": len(self.training),
                        "conditions": {}, "oracle": None, "subset": []}
        best = self.best_oracle()
        finished: dict[str, list[list[ArcTrial]]] = {}
        for condition in ("icl", "ttt", "seal"):
            trials = self._trials(condition)
            expected = 1 if condition == "icl" else self.settings.samples
            if all(len(per_task) == expected for per_task in trials):
                finished[condition] = trials
        if best is not None:
            finished["oracle"] = [[trials[best]] for trials in self._trials("oracle")]
            per_config = [sum(trials[c].solved for trials in self._trials("oracle")) for c in range(len(self.oracle))]
            result["oracle"] = {"best": best, "configuration": self.oracle[best].model_dump(),
                                "tasks_solved_per_configuration": per_config,
                                "tasks_solved_by_any": sum(any(t.solved for t in trials)
                                                           for trials in self._trials("oracle"))}
            result["subset"] = [t.id for t, trials in zip(self.evaluation, finished["oracle"]) if trials[0].solved]
        chosen = {t.id for t in self.evaluation if t.id in result["subset"]}
        for condition, trials in finished.items():
            row = {"all": _rates(self.evaluation, trials)}
            subset = [(t, per_task) for t, per_task in zip(self.evaluation, trials) if t.id in chosen]
            if subset:
                row["subset"] = _rates([t for t, _ in subset], [per_task for _, per_task in subset])
            result["conditions"][condition] = row
        return result
