"""ReST-EM, SEAL's outer loop: sample self-edits per passage, score each by the inner loop, keep the best one
when it beats training on the passage alone, and fine-tune the self-edit generator on the kept pairs.

Every trial is appended to a journal as soon as it finishes (the round's sampled self-edits too), so a killed
round resumes without repeating a finished trial. `run_rounds` runs rounds one after another (of passages:
`train_generator`; of ARC tasks: engines/arc_rest_em.py) and stores the generator after each as a
content-addressed artifact, so a killed run restarts from the last round's checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from reverie.artifacts import ArtifactStore
from reverie.config import TrainSettings
from reverie.data.jsonl import CorruptFile, append_jsonl, scan_jsonl
from reverie.data.knowledge import Example
from reverie.data.passages import Passage
from reverie.data.self_edits import self_edit_examples, self_edit_prompt
from reverie.engines.inner_loop import InnerLoop, generate_self_edits
from reverie.engines.models import reset_lora
from reverie.engines.training import train_sft
from reverie.errors import ReverieError


@dataclass
class RoundSettings:
    style: str = "implications"
    samples: int = 3  # k self-edits per passage
    temperature: float = 1.0
    max_new_tokens: int = 256
    generator_train: TrainSettings = field(
        default_factory=lambda: TrainSettings(learning_rate=3e-4, epochs=2, block_size=1024)
    )


@dataclass
class RoundResult:
    baseline_accuracy: float  # mean over passages, inner loop on the passage alone
    sampled_accuracy: float  # mean over every sampled self-edit
    best_accuracy: float  # mean over passages of the best self-edit
    kept: int  # passages whose best self-edit beat the baseline
    trials_run: int  # trials run in this call (the rest came from the journal)
    seconds: float  # wall time of this call


def read_journal(path: Path) -> dict[str, Any]:
    """The complete records of a journal (a torn last line is ignored); empty when there is none."""
    entries, bad = scan_jsonl(path, lambda row: (row["key"], row["value"]))
    if corrupt := [line for line in bad if not line.torn]:
        raise CorruptFile(corrupt)
    return dict(entries)


class TrialJournal:
    """Append-only JSONL of finished trials, keyed by name; each line is flushed and fsynced.

    The first record fingerprints the round (passages, settings, seed): a journal written for another
    round is refused rather than reused.
    """

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        if path.is_file():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):  # a line torn by a kill: drop it, its trial reruns
                os.truncate(path, data.rfind(b"\n") + 1)
        self.records: dict[str, Any] = read_journal(path)
        recorded = self.records.get("fingerprint")
        if recorded is None:
            self.add("fingerprint", fingerprint)
        elif recorded != fingerprint:
            raise ReverieError(f"{path} was written for another round (other passages, settings or seed)")

    def get(self, key: str) -> Any:
        return self.records.get(key)

    def add(self, key: str, value: Any) -> None:
        append_jsonl(self.path, {"key": key, "value": value})
        self.records[key] = value


def fingerprint(*parts: Any) -> str:
    """Content hash of JSON-able parts: what a journal was written for."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class GeneratorLoop(Protocol):
    """What ReST-EM needs of an inner loop (SEAL's InnerLoop, ARC's ArcInnerLoop): a resident model with a trial
    adapter, which it can fold into the weights and save without."""

    model: PeftModel
    tokenizer: PreTrainedTokenizerBase

    def absorb_adapter(self) -> None: ...

    def save_weights(self, directory: Path) -> None: ...


def teach_generator(loop: GeneratorLoop, kept: list[Example], train: TrainSettings, seed: int) -> None:
    """ReST-EM's M-step: supervised fine-tuning of the generator on its own kept self-edits, folded into its
    weights; with nothing kept, the generator is left unchanged (and no trial's adapter behind)."""
    reset_lora(loop.model, seed)
    if kept:
        train_sft(loop.model, loop.tokenizer, kept, train, "ReST-EM: train generator")
        loop.absorb_adapter()


def run_round(loop: InnerLoop, passages: list[Passage], settings: RoundSettings, journal_path: Path,
              seed: int = 0) -> RoundResult:
    """One ReST-EM round over `passages`; on return the generator (the loop's model) has learned from it."""
    start = time.perf_counter()
    journal = TrialJournal(journal_path, fingerprint([p.model_dump() for p in passages], asdict(settings), seed))
    edits = journal.get("self-edits")
    if edits is None:
        reset_lora(loop.model, seed)  # generate with the current generator, no trial adapter
        edits = generate_self_edits(
            loop.model, loop.tokenizer, [(p.title, p.context) for p in passages], settings.style, settings.samples,
            settings.temperature, settings.max_new_tokens, seed=seed,
        )
        journal.add("self-edits", edits)

    trials_run = 0

    def scored(key: str, examples: list[Example], passage: Passage) -> float:
        nonlocal trials_run
        if journal.get(key) is None:
            journal.add(key, loop.trial(examples, passage.qa_pairs(), seed=seed).accuracy)
            trials_run += 1
        return journal.get(key)

    baselines, sampled, best, kept_pairs = [], [], [], []
    for i, passage in enumerate(passages):
        baseline = scored(f"baseline/{i}", self_edit_examples(passage.title, passage.context, []), passage)
        scores = [
            scored(f"trial/{i}/{j}", self_edit_examples(passage.title, passage.context, items), passage)
            for j, items in enumerate(edits[i])
        ]
        baselines.append(baseline)
        sampled += scores
        best.append(max(scores))
        winner = scores.index(max(scores))
        if scores[winner] > baseline and edits[i][winner]:
            prompt = self_edit_prompt(settings.style, passage.title, passage.context)
            kept_pairs.append(Example(prompt=prompt, completion="\n".join(edits[i][winner])))

    teach_generator(loop, kept_pairs, settings.generator_train, seed)
    return RoundResult(
        baseline_accuracy=sum(baselines) / len(baselines),
        sampled_accuracy=sum(sampled) / max(1, len(sampled)),
        best_accuracy=sum(best) / len(best),
        kept=len(kept_pairs),
        trials_run=trials_run,
        seconds=time.perf_counter() - start,
    )


@dataclass
class GeneratorRound:
    round: int
    checkpoint: str  # artifact hash of the generator's weights after this round
    result: Any  # the round's figures: RoundResult, or ArcRoundResult for ARC


def finished_rounds(state_dir: Path, result_type: type = RoundResult) -> list[GeneratorRound]:
    """The rounds `run_rounds` has finished in `state_dir`, oldest first."""
    records = read_journal(state_dir / "rounds.jsonl")
    rounds = []
    while (entry := records.get(f"round/{len(rounds) + 1}")) is not None:
        rounds.append(GeneratorRound(entry["round"], entry["checkpoint"], result_type(**entry["result"])))
    return rounds


Loop = TypeVar("Loop", bound=GeneratorLoop)


def run_rounds(
    load_loop: Callable[[Path | None], Loop],
    one_round: Callable[[Loop, Path, int], Any],
    run_fingerprint: str,
    rounds: int,
    state_dir: Path,
    store: ArtifactStore,
    seed: int = 0,
    on_round: Callable[[GeneratorRound], None] | None = None,
    result_type: type = RoundResult,
) -> tuple[Loop, list[GeneratorRound]]:
    """Run ReST-EM rounds 1..`rounds` (`one_round(loop, journal path, seed)` each), resuming after the last
    finished one and checkpointing the generator after each.

    `load_loop(None)` builds the loop on the starting model, `load_loop(path)` on a stored generator. Asking
    for more rounds than before extends a finished run; a run with another fingerprint is refused.
    """
    journal = TrialJournal(state_dir / "rounds.jsonl", run_fingerprint)
    done = finished_rounds(state_dir, result_type)
    loop = load_loop(store.path(done[-1].checkpoint) if done else None)
    for number in range(len(done) + 1, rounds + 1):
        result = one_round(loop, state_dir / f"round-{number}.jsonl", seed + number)
        with store.stage() as staged:
            loop.save_weights(staged.path)
        finished = GeneratorRound(number, staged.hash, result)
        if on_round is not None:  # first, so that a caller registers the checkpoint before the round counts as done
            on_round(finished)
        journal.add(f"round/{number}", asdict(finished))
        done.append(finished)
    return loop, done


def train_generator(
    load_loop: Callable[[Path | None], InnerLoop],
    passages: list[Passage],
    settings: RoundSettings,
    rounds: int,
    state_dir: Path,
    store: ArtifactStore,
    seed: int = 0,
    on_round: Callable[[GeneratorRound], None] | None = None,
) -> tuple[InnerLoop, list[GeneratorRound]]:
    """ReST-EM on passages (run_rounds); other passages, settings or seed than the run's are refused."""
    return run_rounds(load_loop, lambda loop, path, round_seed: run_round(loop, passages, settings, path, round_seed),
                      fingerprint([p.model_dump() for p in passages], asdict(settings), seed), rounds, state_dir,
                      store, seed, on_round)
