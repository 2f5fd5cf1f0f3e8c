"""SEAL inner loop: reverie's resident-model design against the SEAL repository's reference design, in one
process, on the same SQuAD passages and self-edits, with the same learning rate and LoRA shape. Optimizer steps
differ by design: the reference takes one per sequence, reverie one per packed row, so at the same epochs reverie
takes fewer steps. reverie runs with packed rows (at each --ours-epochs) and with one example per row (the
reference's steps, without its padding); the speed-up is reported for each, and for the fastest variant that
reaches the reference's accuracy.

    .venv/bin/python benchmarks/inner_loop.py [--passages 2] [--epochs 2] [--ours-epochs 2,6] [--max-items 8]

Self-edit per passage: the passage plus the first --max-items GPT-4.1 implications
(../shared/data/squad/gpt41_implications.json), each prefixed with the title.

- reverie: one resident model with one LoRA reset in place per trial, packed rows, fresh optimizer, batched
  greedy closed-book answers.
- reference: per trial a fresh get_peft_model, a Hugging Face Trainer built for the request, every sequence
  padded to 2048 tokens, the adapter saved to disk and reloaded to answer (then unloaded again).

Also times a large float32 matmul to report the inner loop's training throughput as a share of the machine's
measured peak (training FLOPs per token taken as 4 x parameters: forward plus input gradients; the frozen
weights get no weight gradients). Writes benchmarks/results/inner_loop.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from results_io import write_results

from reverie.config import LoraSettings, ModelConfig, TrainSettings
from reverie.data.self_edits import parse_self_edit, self_edit_examples
from reverie.engines.evaluation import closed_book_qa
from reverie.engines.inner_loop import InnerLoop
from reverie.engines.models import load_pretrained, resolve_source

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad" / "gpt41_implications.json"
REFERENCE_PAD = 2048


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
    """Best of several timed float32 matmuls: the machine's attainable peak, less noise from neighbours."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def reference_trial(model, tokenizer, examples, questions, lora: LoraSettings, train: TrainSettings, workdir: Path):
    """The reference design, as the SEAL repository's test-time-training server does it per request."""
    start = time.perf_counter()
    peft_config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, peft_config)
    rows = []
    for example in examples:
        ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        ids = (bos + ids)[:REFERENCE_PAD]
        pad = REFERENCE_PAD - len(ids)
        rows.append({
            "input_ids": torch.tensor(ids + [tokenizer.pad_token_id] * pad),
            "attention_mask": torch.tensor([1] * len(ids) + [0] * pad),
            "labels": torch.tensor(ids + [-100] * pad),
        })
    args = TrainingArguments(
        output_dir=str(workdir / "trainer"), per_device_train_batch_size=1, num_train_epochs=train.epochs,
        learning_rate=train.learning_rate, lr_scheduler_type="linear", warmup_steps=0.1, logging_strategy="no",
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=train.seed,
    )
    Trainer(model=peft_model, args=args, train_dataset=rows).train()
    adapter_dir = workdir / "adapter"
    peft_model.save_pretrained(adapter_dir)
    base = peft_model.unload()
    trained = time.perf_counter()
    answering = PeftModel.from_pretrained(base, adapter_dir)
    answering.eval()
    scores, _ = closed_book_qa(answering, tokenizer, questions, 32, 16)
    answering.unload()
    return scores, trained - start, time.perf_counter() - trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--ours-epochs", default=None,
                        help="comma-separated epoch counts for reverie's packed loop (default: --epochs)")
    parser.add_argument("--max-items", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=512, help="reverie's packed row length")
    parser.add_argument("--skip-reference", action="store_true", help="run only reverie's inner loop")
    parser.add_argument("--out", default="benchmarks/results/inner_loop")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    # reverie's variants: packed rows at each --ours-epochs, and one example per row (per-sequence steps, as the
    # reference takes) at --epochs.
    variants = [(f"packed rows, {e} epochs", e, True)
                for e in (map(int, args.ours_epochs.split(",")) if args.ours_epochs else [args.epochs])]
    variants.append((f"one example per row, {args.epochs} epochs", args.epochs, False))

    passages = json.loads(DATA.read_text())[: args.passages]
    lora = LoraSettings(rank=args.rank, alpha=2 * args.rank)
    train = TrainSettings(learning_rate=args.lr, epochs=args.epochs, block_size=args.block_size, rows_per_step=1,
                          seed=0)
    model_dir = resolve_source("embedded", Path("benchmarks/.cache"), Path("."))
    peak = matmul_peak_flops()

    reference_model = None if args.skip_reference else load_pretrained(model_dir, ModelConfig())
    ours_model = load_pretrained(model_dir, ModelConfig())
    loop = InnerLoop(ours_model.model, ours_model.tokenizer, lora, train)
    n_params = sum(p.numel() for n, p in ours_model.model.named_parameters() if "lora_" not in n)

    trials = []
    for index, passage in enumerate(passages):
        items = parse_self_edit("\n".join(passage["completions"][:1]))[: args.max_items]
        examples = self_edit_examples(passage["title"], passage["context"], items)
        questions = [(q["question"], q["answer"]) for q in passage["questions"]]
        trial = {"title": passage["title"], "sequences": len(examples), "questions": len(questions), "ours": {}}
        for label, epochs, packed in variants:
            loop.train = train.model_copy(update={"epochs": epochs, "pack": packed})
            ours = loop.trial(examples, questions, seed=index)
            trial["ours"][label] = {
                "accuracy": ours.accuracy, "train_s": ours.train_seconds, "eval_s": ours.eval_seconds,
                "train_tokens_per_s": ours.train_tokens_per_s, "truncated_sequences": ours.truncated,
            }
        if not args.skip_reference:
            with tempfile.TemporaryDirectory() as workdir:
                ref_scores, ref_train, ref_eval = reference_trial(
                    reference_model.model, reference_model.tokenizer, examples, questions, lora, train, Path(workdir)
                )
            trial["reference"] = {"accuracy": ref_scores["accuracy"], "train_s": ref_train, "eval_s": ref_eval}
        trials.append(trial)
        print(json.dumps(trials[-1]), flush=True)

    def mean(records: list[dict], key: str) -> float:
        return statistics.fmean(r[key] for r in records)

    ours = {}
    for label, _, _ in variants:
        records = [t["ours"][label] for t in trials]
        ours[label] = {"s_per_trial": mean(records, "train_s") + mean(records, "eval_s"),
                       "accuracy": mean(records, "accuracy"),
                       "training_share_of_matmul_peak": mean(records, "train_tokens_per_s") * 4 * n_params / peak}
    result = {"settings": vars(args), "matmul_peak_gflops": peak / 1e9, "params": n_params, "trials": trials,
              "ours": ours}
    table = ["| design | s per inner loop | accuracy |", "|---|---|---|"]
    table += [f"| reverie: {label} | {o['s_per_trial']:.1f} | {o['accuracy']:.3f} |" for label, o in ours.items()]
    share = ours[variants[0][0]]["training_share_of_matmul_peak"]
    summary = [f"{len(trials)} passages (passage + {args.max_items} GPT-4.1 implications, lr {args.lr}, LoRA rank "
               f"{args.rank}, reverie's rows of up to {args.block_size} tokens). reverie's training throughput "
               f"(packed) {share:.1%} of the measured float32 matmul peak ({peak / 1e9:.0f} GFLOP/s)."]
    if not args.skip_reference:
        references = [t["reference"] for t in trials]
        ref_s = mean(references, "train_s") + mean(references, "eval_s")
        ref_accuracy = mean(references, "accuracy")
        result["reference"] = {"s_per_trial": ref_s, "accuracy": ref_accuracy}
        table.append(f"| reference: Trainer per request, pad 2048, save + reload, {args.epochs} epochs | {ref_s:.1f} | "
                     f"{ref_accuracy:.3f} |")
        result["speedups"] = {label: ref_s / o["s_per_trial"] for label, o in ours.items()}
        summary += ["Speed-up over the reference: " + ", ".join(f"{label} {x:.1f}x"
                                                                   for label, x in result["speedups"].items()) + "."]
        equal = [label for label, o in ours.items() if o["accuracy"] >= ref_accuracy]
        if equal:
            fastest = max(equal, key=lambda label: result["speedups"][label])
            result["equal_accuracy"] = {"variant": fastest, "speedup": result["speedups"][fastest]}
            summary.append(f"At equal accuracy (reverie {ours[fastest]['accuracy']:.3f} vs reference "
                           f"{ref_accuracy:.3f}): {fastest}, {result['speedups'][fastest]:.1f}x faster.")
        else:
            summary.append("No reverie variant reached the reference's accuracy.")
    write_results(args.out, result, "\n".join(table + [""] + [" ".join(summary)]))


if __name__ == "__main__":
    main()
