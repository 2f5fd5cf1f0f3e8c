"""The SEAL paper's single-passage knowledge-incorporation table on real SQuAD, with SmolLM2-135M-Instruct.

    .venv/bin/python benchmarks/seal_squad.py [--eval-passages 50] [--train-passages 30] [--rounds 2]

Conditions, each scored by closed-book accuracy on the passage's questions after an inner loop (a fresh LoRA
trained on the passage plus the condition's self-edit):

- base: no training.
- passage: the passage alone.
- own: the passage plus implications the untrained model wrote itself.
- teacher: the passage plus GPT-4.1's implications (../shared/data/squad/gpt41_implications.json).
- seal: the passage plus implications written by the model after --rounds ReST-EM rounds on --train-passages
  training passages from ../shared/data/squad/squad_val_passages.json, from articles (titles) disjoint from
  the evaluation passages. As in the paper, the SEAL model both writes the self-edit and is trained on it.
  With --warm-start N the generator is first fine-tuned on GPT-4.1's implications of N passages of
  gpt41_implications.json that are not evaluation passages and whose titles no evaluation passage has (a
  distilled writer; --rounds 0 measures the warm start alone). ReST-EM's M-step fine-tunes the generator on
  its kept self-edits: by default on packed rows, lr 3e-4, 2 epochs (`dream.seal.generator_train`'s default);
  --m-step-per-pair takes an optimizer step per kept pair, as the warm start does.

Evaluation passages are the first --eval-passages of gpt41_implications.json. Every trial is journaled under
--state as soon as it ends, and the generator is checkpointed after each round, so a killed run resumes where
it stopped. Results (means with 95% bootstrap intervals over passages, paired differences, time per inner
loop and per round) are rewritten after each condition to benchmarks/results/seal_squad.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from transformers.utils import logging as hf_logging

from reverie.config import LoraSettings, ModelConfig, TrainSettings
from reverie.data.passages import Passage, load_passages
from reverie.data.self_edits import PROMPT_STYLES, teacher_self_edits
from reverie.engines.inner_loop import InnerLoop
from reverie.engines.models import load_pretrained, resolve_source
from reverie.engines.rest_em import GeneratorRound, RoundSettings
from reverie.engines.seal_bench import CONDITIONS, SealBench
from reverie.errors import ReverieError

DEFAULT_M_STEP = RoundSettings().generator_train
SQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad"
RUN_ORDER = ("passage", "base", "seal", "own", "teacher")  # the headline comparison first
PAPER = {"base": 32.7, "passage": 33.5, "own": 39.7, "teacher": 46.3, "seal": 47.0}
LABELS = {
    "base": "base model", "passage": "train on passage", "own": "passage + own {style} (untrained)",
    "teacher": "passage + GPT-4.1 implications", "seal": "SEAL (passage + {style} after {rounds}{warm})",
}


def split_passages(eval_count: int, train_count: int) -> tuple[list[Passage], list[Passage]]:
    evaluation = load_passages(SQUAD / "gpt41_implications.json")[:eval_count]
    held_titles = {p.title for p in evaluation}
    pool = [p for p in load_passages(SQUAD / "squad_val_passages.json") if p.title not in held_titles]
    random.Random(0).shuffle(pool)
    return evaluation, pool[:train_count]


def warm_start_passages(eval_count: int, count: int) -> list[Passage]:
    """Teacher-written passages for the generator's warm start: after the evaluation passages in
    gpt41_implications.json, on titles that no evaluation passage has (only their implications are read)."""
    passages = load_passages(SQUAD / "gpt41_implications.json")
    held_titles = {p.title for p in passages[:eval_count]}
    clean = [p for p in passages[eval_count:] if p.title not in held_titles]
    if len(clean) < count:
        raise SystemExit(f"--warm-start {count}: only {len(clean)} teacher passages have titles disjoint from the "
                         f"{eval_count} evaluation passages")
    return clean[:count]


def generator_training(learning_rate: float, epochs: int, per_pair: bool) -> TrainSettings:
    """How the self-edit generator is fine-tuned (warm start, ReST-EM's M-step): an optimizer step per pair, or
    packed rows (RoundSettings' default M-step)."""
    return TrainSettings(learning_rate=learning_rate, epochs=epochs, block_size=1024,
                         rows_per_step=1 if per_pair else 2, pack=not per_pair, seed=0)


def m_step_text(args: argparse.Namespace) -> str:
    """How ReST-EM's M-step trained the generator."""
    return (f"lr {args.m_step_lr}, {args.m_step_epochs} epochs, "
            f"{'a step per kept pair' if args.m_step_per_pair else 'packed rows'}")


def markdown(summary: dict, args: argparse.Namespace) -> str:
    table = ["| condition | SmolLM2-135M (ours) | 95% CI | s per inner loop | paper, Qwen2.5-7B |",
             "|---|---|---|---|---|"]
    for condition in [c for c in CONDITIONS if c in summary["conditions"]]:
        row = summary["conditions"][condition]
        low, high = row["ci95"]
        seconds = f"{row['s_per_inner_loop']:.1f}" if condition != "base" else "-"
        warm = (f", writer warm-started on GPT-4.1 implications of {args.warm_start} other passages"
                if args.warm_start else "")
        rounds = f"{args.rounds} ReST-EM round{'' if args.rounds == 1 else 's'}"
        label = LABELS[condition].format(style=args.style, rounds=rounds, warm=warm)
        table.append(f"| {label} | {100 * row['accuracy']:.1f}% | {100 * low:.1f}–{100 * high:.1f} | {seconds} | "
                     f"{PAPER[condition]}% |")
    for name, total in summary["multi_passage"].items():
        interval = " ({:.1f}–{:.1f})".format(*(100 * x for x in total["ci95"])) if "ci95" in total else ""
        table.append(f"| {name} (one adapter per {total['questions']}-question group, {total['groups']} groups) | "
                     f"{100 * total['accuracy']:.1f}%{interval} | | | |")
    lines = [f"{name}: {100 * d['mean']:+.1f} points (95% CI {100 * d['ci95'][0]:+.1f} to {100 * d['ci95'][1]:+.1f}, "
             f"paired over {'questions' if name.startswith('cpt') else 'passages'})"
             for name, d in summary["differences"].items()]
    lines.append(f"{summary['eval_passages']} evaluation passages ({summary['questions']} questions); {args.epochs} "
                 f"epochs, lr {args.lr}, LoRA rank {args.rank}, "
                 f"{'one sequence per row' if args.no_pack else f'packed rows of {args.block_size} tokens'}; graded by "
                 "normalised containment of the gold answer.")
    lines += [f"ReST-EM round {r['round']} over {summary['train_passages']} training passages, k={args.samples}: "
              f"{r['seconds'] / 60:.1f} min ({r['trials_run']} trials run in that call), best-of-k "
              f"{100 * r['best_accuracy']:.1f}% vs passage-only {100 * r['baseline_accuracy']:.1f}% (a sampled "
              f"self-edit: {100 * r['sampled_accuracy']:.1f}%), {r['kept']} self-edits kept, "
              f"{r['items_per_self_edit']:.1f} items per self-edit; M-step {m_step_text(args)}"
              for r in summary["rounds"]]
    items = [f"{c} {row['items_per_self_edit']:.1f}" for c, row in summary["conditions"].items()
             if c not in ("base", "passage") and "items_per_self_edit" in row]
    if items:
        lines.append(f"self-edit items trained per passage (after parsing): {', '.join(items)}")
    for condition, pick in summary.get("temperature_picks", {}).items():
        scores = ", ".join(f"{name if name == 'passage' else 'T=' + name} {100 * accuracy:.1f}%"
                           for name, accuracy in pick["train_accuracy"].items())
        lines.append(f"{condition}: self-edits written at temperature {pick['temperature']}, the best on the "
                     f"{summary['train_passages']} training passages ({scores})")
    return "\n".join(table + [""] + [f"- {line}" for line in lines]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-passages", type=int, default=50)
    parser.add_argument("--train-passages", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="ReST-EM rounds (0: no ReST-EM, with --warm-start)")
    parser.add_argument("--warm-start", type=int, default=0, metavar="N",
                        help="fine-tune the SEAL generator on GPT-4.1 implications of N non-evaluation passages first")
    parser.add_argument("--warm-epochs", type=int, default=3)
    parser.add_argument("--warm-lr", type=float, default=1e-3)
    parser.add_argument("--m-step-lr", type=float, default=DEFAULT_M_STEP.learning_rate,
                        help="ReST-EM's M-step (the generator's fine-tune on its kept self-edits): learning rate")
    parser.add_argument("--m-step-epochs", type=int, default=DEFAULT_M_STEP.epochs)
    parser.add_argument("--m-step-per-pair", action="store_true",
                        help="the M-step takes an optimizer step per kept pair, as the warm start "
                        "(default: packed rows)")
    parser.add_argument("--samples", type=int, default=3, help="self-edits sampled per training passage (k)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--pick-temperature", default="", metavar="T,T,...",
                        help="own and seal write their evaluation self-edits at whichever of these temperatures scored "
                        "best on the training passages (ReST-EM still samples at --temperature)")
    parser.add_argument("--style", default="implications", choices=sorted(PROMPT_STYLES),
                        help="what the self-edit prompt asks for (own and seal conditions)")
    parser.add_argument("--edit-tokens", type=int, default=256, help="longest self-edit, in tokens")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=384, help="long enough for every evaluation passage")
    parser.add_argument("--no-pack", action="store_true",
                        help="one training sequence per row: an optimizer step per sequence, as the paper's trainer")
    parser.add_argument("--conditions", default=",".join(RUN_ORDER), help="comma-separated subset, run in order "
                        "(with --multi-passage, base is left out: it trains nothing)")
    parser.add_argument("--multi-passage", type=int, default=0, metavar="N",
                        help="SEAL's continued-pretraining variant: one adapter per N evaluation passages and their "
                        "self-edits at once, graded on all their questions (0: one adapter per passage)")
    parser.add_argument("--state", default="benchmarks/.cache/seal_squad", help="journal and checkpoints")
    parser.add_argument("--out", default="benchmarks/results/seal_squad")
    parser.add_argument("--report-only", action="store_true", help="rewrite the results from the journal, run nothing")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    conditions = [c for c in args.conditions.split(",") if not (args.multi_passage and c == "base")]
    if unknown := set(conditions) - set(CONDITIONS):
        parser.error(f"unknown condition(s) {', '.join(sorted(unknown))}; choose from {', '.join(CONDITIONS)}")
    if args.warm_start and args.style != "implications":
        parser.error("--warm-start trains on GPT-4.1's implications: it needs --style implications")
    if args.rounds < 0 or (args.rounds == 0 and not args.warm_start):
        parser.error("--rounds 0 needs --warm-start (a generator must come from somewhere)")

    lora = LoraSettings(rank=args.rank, alpha=2 * args.rank)
    train = TrainSettings(learning_rate=args.lr, epochs=args.epochs, block_size=args.block_size, rows_per_step=1,
                          pack=not args.no_pack, seed=0)
    model_dir = resolve_source("embedded", Path("benchmarks/.cache"), Path("."))

    def load_loop(directory: Path | None) -> InnerLoop:
        loaded = load_pretrained(directory or model_dir, ModelConfig())
        return InnerLoop(loaded.model, loaded.tokenizer, lora, train)

    def on_round(finished: GeneratorRound) -> None:
        r = finished.result
        print(f"round {finished.round}: passage-only {r.baseline_accuracy:.3f}, sampled {r.sampled_accuracy:.3f}, "
              f"best {r.best_accuracy:.3f}, kept {r.kept}, {r.seconds:.0f} s", flush=True)

    evaluation, training = split_passages(args.eval_passages, args.train_passages)
    m_step = generator_training(args.m_step_lr, args.m_step_epochs, args.m_step_per_pair)
    settings = RoundSettings(style=args.style, samples=args.samples, temperature=args.temperature,
                             max_new_tokens=args.edit_tokens, generator_train=m_step)
    warm_start = None
    if args.warm_start:
        pairs = teacher_self_edits([(p.title, p.context, p.completions[0])
                                    for p in warm_start_passages(args.eval_passages, args.warm_start)])
        warm_train = generator_training(args.warm_lr, args.warm_epochs, per_pair=True)  # as the inner loop
        warm_start = (pairs, warm_train)
    try:
        temperatures = [float(t) for t in args.pick_temperature.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--pick-temperature {args.pick_temperature!r}: give numbers separated by commas, as 0.3,0.6,1.0")
    if any(not 0 < t <= 2 for t in temperatures):
        parser.error(f"--pick-temperature {args.pick_temperature!r}: every temperature must be in (0, 2]")
    bench = SealBench(load_loop, settings, evaluation, training, args.rounds, Path(args.state),
                      [lora.model_dump(), train.model_dump()], on_round, warm_start=warm_start,
                      temperatures=temperatures or None)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write_report() -> None:
        summary = bench.summary() | {"settings": {k: v for k, v in vars(args).items() if k != "report_only"}}
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(summary, args))
        print(markdown(summary, args), flush=True)

    for condition in [] if args.report_only else conditions:
        started = time.perf_counter()
        def report(key: str, r: dict) -> None:
            print(f"{key}: accuracy {r['accuracy']:.2f} in {r['seconds']:.1f} s", flush=True)

        if temperatures and condition in ("own", "seal"):
            print(f"{condition}: temperature {bench.pick_temperature(condition, report)}, picked on the training "
                  "passages", flush=True)
        if args.multi_passage:
            bench.run_multi_passage(condition, args.multi_passage, report)
        else:
            bench.run(condition, report)
        print(f"{condition}: done in {time.perf_counter() - started:.0f} s", flush=True)
        write_report()
    if args.report_only:
        write_report()


if __name__ == "__main__":
    try:
        main()
    except ReverieError as error:  # a state directory from other settings, a corrupt journal: no traceback
        raise SystemExit(f"seal_squad: {error} (--state keeps each run's journal: give another, or remove it)") \
            from None
