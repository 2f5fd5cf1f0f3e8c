"""ReST-EM on ARC tasks: the generator writes k self-edits (training configurations) per training task, each is
run by the test-time-training inner loop, and the generator is fine-tuned on the self-edits whose adapter solved
their task, round after round. Trials are journaled as they finish and the generator is checkpointed after each
round (engines/rest_em.py), so a killed run resumes without repeating a trial."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from reverie.artifacts import ArtifactStore
from reverie.config import ArcSealSettings
from reverie.data.arc import ArcTask
from reverie.data.arc_self_edit import arc_self_edit_prompt, parse_arc_self_edit
from reverie.data.knowledge import Example
from reverie.engines.arc_ttt import ArcInnerLoop, ArcTrial
from reverie.engines.rest_em import GeneratorRound, TrialJournal, fingerprint, run_rounds, teach_generator


@dataclass
class ArcRoundResult:
    tasks: int
    self_edits: int
    valid: int  # self-edits that parsed as configurations
    solved: int  # self-edits whose adapter solved their task
    tasks_solved: int  # tasks at least one self-edit solved
    kept: int  # (prompt, self-edit) pairs the generator was fine-tuned on
    trials_run: int  # trials run in this call (the rest came from the journal)
    seconds: float


def journaled_trials(loop: ArcInnerLoop, journal: TrialJournal, prefix: str, tasks: list[ArcTask],
                     edits: list[list[str]], seed: int,
                     report: Callable[[str, ArcTrial], None] = lambda key, trial: None,
                     ) -> tuple[list[list[ArcTrial]], int]:
    """Every self-edit's trial on its task, read from the journal or run and journaled at once
    (key `<prefix>/<task id>/<sample>`); also returns how many were run now."""
    run = 0
    trials: list[list[ArcTrial]] = []
    for task, texts in zip(tasks, edits):
        per_task = []
        for j, text in enumerate(texts):
            key = f"{prefix}/{task.id}/{j}"
            if journal.get(key) is None:
                trial = loop.trial(task, text, seed=seed + j)
                journal.add(key, trial.to_json())
                report(key, trial)
                run += 1
            per_task.append(ArcTrial(**journal.get(key)))
        trials.append(per_task)
    return trials, run


def run_arc_round(loop: ArcInnerLoop, tasks: list[ArcTask], journal_path: Path, seed: int = 0,
                  report: Callable[[str, ArcTrial], None] = lambda key, trial: None) -> ArcRoundResult:
    """One ReST-EM round; on return the generator (the loop's model) has learned from its solving self-edits."""
    start = time.perf_counter()
    settings = loop.settings
    journal = TrialJournal(journal_path, fingerprint([t.model_dump() for t in tasks], settings.model_dump(), seed))
    if journal.get("self-edits") is None:
        journal.add("self-edits", loop.write_self_edits(tasks, settings.samples, seed))
    edits = journal.get("self-edits")
    trials, run = journaled_trials(loop, journal, "trial", tasks, edits, seed, report)
    kept = [Example(prompt=arc_self_edit_prompt(task.demonstrations()), completion=parse_arc_self_edit(text).text())
            for task, texts, results in zip(tasks, edits, trials)
            for text, trial in zip(texts, results) if trial.solved]
    teach_generator(loop, kept, settings.generator_train, seed)
    flat = [trial for per_task in trials for trial in per_task]
    return ArcRoundResult(tasks=len(tasks), self_edits=len(flat), valid=sum(t.valid for t in flat),
                          solved=sum(t.solved for t in flat),
                          tasks_solved=sum(any(t.solved for t in per_task) for per_task in trials), kept=len(kept),
                          trials_run=run, seconds=time.perf_counter() - start)


def train_arc_generator(
    load_loop: Callable[[Path | None], ArcInnerLoop],
    tasks: list[ArcTask],
    settings: ArcSealSettings,
    rounds: int,
    state_dir: Path,
    store: ArtifactStore,
    seed: int = 0,
    on_round: Callable[[GeneratorRound], None] | None = None,
    report: Callable[[str, ArcTrial], None] = lambda key, trial: None,
) -> tuple[ArcInnerLoop, list[GeneratorRound]]:
    """ReST-EM rounds 1..`rounds` on ARC training tasks, resumable; other tasks or settings are refused."""
    return run_rounds(load_loop, lambda loop, path, round_seed: run_arc_round(loop, tasks, path, round_seed, report),
                      fingerprint([t.model_dump() for t in tasks], settings.model_dump(), seed), rounds, state_dir,
                      store, seed, on_round, ArcRoundResult)
