"""The SEAL paper's single-passage knowledge-incorporation table on real SQuAD, with SmolLM2-135M-Instruct.

    .venv/bin/python benchmarks/seal_squad.py [--eval-passages 50] [--train-passages 30] [--rounds 2]

Conditions, each scored by closed-book accuracy on the passage's questions after an inner loop (a fresh LoRA
trained on the passage plus the condition's self-edit):

- base: no training.
- passage: the passage alone.
- own: the passage plus implications the untrained model wrote itself.
- gpt41: the passage plus GPT-4.1's implications (../shared/data/squad/gpt41_implications.json).
- seal: the passage plus implications written by the model after --rounds ReST-EM rounds on --train-passages
  training passages from ../shared/data/squad/squad_val_passages.json, from articles (titles) disjoint from
  the evaluation passages. As in the paper, the SEAL model both writes the self-edit and is trained on it.

Evaluation passages are the first --eval-passages of gpt41_implications.json. Every trial is journaled under
--state as soon as it ends, and the generator is checkpointed after each round, so a killed run resumes where
it stopped. Results (means with 95% bootstrap intervals over passages, paired differences, time per inner
loop and per round) are rewritten after each condition to benchmarks/results/seal_squad.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import time
from dataclasses import asdict
from pathlib import Path

from transformers.utils import logging as hf_logging

from reverie.artifacts import ArtifactStore
from reverie.config import LoraSettings, ModelConfig, TrainSettings
from reverie.data.passages import Passage, load_passages
from reverie.data.self_edits import parse_self_edit, self_edit_examples
from reverie.engines.evaluation import closed_book_qa
from reverie.engines.inner_loop import InnerLoop, generate_self_edits
from reverie.engines.models import load_pretrained, reset_lora, resolve_source
from reverie.engines.rest_em import RoundSettings, TrialJournal, finished_rounds, train_generator

SQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad"
CONDITIONS = ("passage", "base", "seal", "own", "gpt41")  # run order: the headline comparison first
PAPER = {"base": 32.7, "passage": 33.5, "own": 39.7, "gpt41": 46.3, "seal": 47.0}
LABELS = {
    "base": "base model", "passage": "train on passage", "own": "passage + own implications (untrained)",
    "gpt41": "passage + GPT-4.1 implications", "seal": "SEAL (passage + implications after ReST-EM)",
}


def bootstrap_ci(values: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def split_passages(eval_count: int, train_count: int) -> tuple[list[Passage], list[Passage]]:
    evaluation = load_passages(SQUAD / "gpt41_implications.json")[:eval_count]
    held_titles = {p.title for p in evaluation}
    pool = [p for p in load_passages(SQUAD / "squad_val_passages.json") if p.title not in held_titles]
    random.Random(0).shuffle(pool)
    return evaluation, pool[:train_count]


class Benchmark:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.state = Path(args.state)
        self.lora = LoraSettings(rank=args.rank, alpha=2 * args.rank)
        self.train = TrainSettings(learning_rate=args.lr, epochs=args.epochs, block_size=args.block_size,
                                   rows_per_step=1, seed=0)
        self.rounds = RoundSettings(samples=args.samples, temperature=args.temperature,
                                    max_new_tokens=args.edit_tokens)
        self.evaluation, self.training = split_passages(args.eval_passages, args.train_passages)
        settings = [asdict(self.rounds), self.lora.model_dump(), self.train.model_dump(), args.eval_passages]
        fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        self.journal = TrialJournal(self.state / "eval.jsonl", fingerprint)
        self.model_dir = resolve_source("embedded", Path("benchmarks/.cache"), Path("."))
        self._base_loop: InnerLoop | None = None

    def loop_on(self, directory: Path | None) -> InnerLoop:
        loaded = load_pretrained(directory or self.model_dir, ModelConfig())
        return InnerLoop(loaded.model, loaded.tokenizer, self.lora, self.train)

    @property
    def base_loop(self) -> InnerLoop:
        if self._base_loop is None:
            self._base_loop = self.loop_on(None)
        return self._base_loop

    def self_edits(self, key: str, loop: InnerLoop) -> list[list[str]]:
        """One sampled self-edit per evaluation passage, written by the loop's model (journaled)."""
        if self.journal.get(key) is None:
            reset_lora(loop.model, 0)
            edits = generate_self_edits(loop.model, loop.tokenizer, [(p.title, p.context) for p in self.evaluation],
                                        self.rounds.style, 1, self.rounds.temperature, self.rounds.max_new_tokens)
            self.journal.add(key, [per_passage[0] for per_passage in edits])
        return self.journal.get(key)

    def run_condition(self, condition: str) -> None:
        loop = self.base_loop
        if condition == "seal":
            store = ArtifactStore(self.state / "artifacts", self.state / "staging")
            started = time.perf_counter()
            loop, _ = train_generator(self.loop_on, self.training, self.rounds, self.args.rounds,
                                      self.state / "rest-em", store, on_round=self._log_round)
            print(f"ReST-EM: {self.args.rounds} rounds ready after {time.perf_counter() - started:.0f} s", flush=True)
        edits = {"own": lambda: self.self_edits("edits/own", loop), "seal": lambda: self.self_edits("edits/seal", loop),
                 "gpt41": lambda: [parse_self_edit(p.completions[0]) for p in self.evaluation]}
        items = edits[condition]() if condition in edits else None
        for i, passage in enumerate(self.evaluation):
            key = f"{condition}/{i}"
            if self.journal.get(key) is not None:
                continue
            start = time.perf_counter()
            if condition == "base":
                reset_lora(loop.model, i)
                scores, _ = closed_book_qa(loop.model, loop.tokenizer, passage.qa_pairs(), loop.max_new_tokens,
                                           loop.batch_size)
                record = {"accuracy": scores["accuracy"], "f1": scores["f1"]}
            else:
                examples = self_edit_examples(passage.title, passage.context, items[i] if items else [])
                trial = loop.trial(examples, passage.qa_pairs(), seed=i)
                record = {"accuracy": trial.accuracy, "f1": trial.f1, "sequences": len(examples),
                          "truncated": trial.truncated}
            record["seconds"] = time.perf_counter() - start
            self.journal.add(key, record)
            print(f"{key}: accuracy {record['accuracy']:.2f} in {record['seconds']:.1f} s", flush=True)

    def _log_round(self, finished) -> None:
        result = finished.result
        print(f"round {finished.round}: baseline {result.baseline_accuracy:.3f}, sampled {result.sampled_accuracy:.3f},"
              f" best {result.best_accuracy:.3f}, kept {result.kept}, {result.seconds:.0f} s", flush=True)

    def report(self) -> None:
        n = len(self.evaluation)
        done = {c: [self.journal.get(f"{c}/{i}") for i in range(n)] for c in CONDITIONS}
        done = {c: rows for c, rows in done.items() if all(rows)}
        result: dict = {"settings": vars(self.args), "eval_passages": n, "train_passages": len(self.training),
                        "questions": sum(len(p.questions) for p in self.evaluation), "conditions": {},
                        "rounds": [{"round": r.round, **asdict(r.result)}
                                   for r in finished_rounds(self.state / "rest-em")]}
        table = ["| condition | SmolLM2-135M (ours) | 95% CI | s per inner loop | paper, Qwen2.5-7B |",
                 "|---|---|---|---|---|"]
        for condition in [c for c in ("base", "passage", "own", "gpt41", "seal") if c in done]:
            accuracy = [r["accuracy"] for r in done[condition]]
            low, high = bootstrap_ci(accuracy)
            seconds = statistics.fmean(r["seconds"] for r in done[condition])
            result["conditions"][condition] = {"accuracy": statistics.fmean(accuracy), "ci95": [low, high],
                                               "f1": statistics.fmean(r["f1"] for r in done[condition]),
                                               "s_per_inner_loop": seconds, "per_passage": accuracy}
            table.append(f"| {LABELS[condition]} | {100 * statistics.fmean(accuracy):.1f}% | "
                         f"{100 * low:.1f}–{100 * high:.1f} | {seconds:.1f} | {PAPER[condition]}% |")
        differences = []
        for a, b in (("seal", "passage"), ("seal", "own"), ("own", "passage"), ("gpt41", "passage")):
            if a in done and b in done:
                diff = [x["accuracy"] - y["accuracy"] for x, y in zip(done[a], done[b])]
                low, high = bootstrap_ci(diff)
                result[f"diff_{a}_minus_{b}"] = {"mean": statistics.fmean(diff), "ci95": [low, high]}
                differences.append(f"{a} − {b}: {100 * statistics.fmean(diff):+.1f} points "
                                   f"(95% CI {100 * low:+.1f} to {100 * high:+.1f}, paired over passages)")
        notes = [f"{n} evaluation passages ({result['questions']} questions); {self.args.epochs} epochs, "
                 f"lr {self.args.lr}, LoRA rank {self.args.rank}, rows of {self.args.block_size} tokens; "
                 "graded by normalised containment of the gold answer."]
        notes += [f"ReST-EM round {r['round']} over {len(self.training)} training passages, k={self.args.samples}: "
                  f"{r['seconds'] / 60:.1f} min (of which {r['trials_run']} trials run in that call), "
                  f"best-of-k {100 * r['best_accuracy']:.1f}% vs passage-only {100 * r['baseline_accuracy']:.1f}%, "
                  f"{r['kept']} kept" for r in result["rounds"]]
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text("\n".join(table + [""] + [f"- {line}" for line in differences + notes]) + "\n")
        print("\n".join(table + differences), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-passages", type=int, default=50)
    parser.add_argument("--train-passages", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=3, help="self-edits sampled per training passage (k)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--edit-tokens", type=int, default=256, help="longest self-edit, in tokens")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated subset, run in order")
    parser.add_argument("--state", default="benchmarks/.cache/seal_squad", help="journal and checkpoints")
    parser.add_argument("--out", default="benchmarks/results/seal_squad")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    unknown = set(args.conditions.split(",")) - set(CONDITIONS)
    if unknown:
        parser.error(f"unknown condition(s) {', '.join(sorted(unknown))}; choose from {', '.join(CONDITIONS)}")
    benchmark = Benchmark(args)
    for condition in args.conditions.split(","):
        benchmark.run_condition(condition)
        benchmark.report()


if __name__ == "__main__":
    main()
