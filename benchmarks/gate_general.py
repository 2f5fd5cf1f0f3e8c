"""The forgetting check's cost on the embedded model (SmolLM2-135M-Instruct): the general suite's scorer
(engines/suites/general.py: rows batched by length, logits only for the choice tokens) against the scorer it
replaced (scoring.continuation_logprobs, rows in item order, logits for every position), side by side on the same
items in one run; then the whole default check (eval.general_limit built-in items) with the new scorer, which is
the Gate's time budget for it per model version (the release's results are stored, so a cycle pays it once, for
the candidate).

    .venv/bin/python benchmarks/gate_general.py [--sample 300]

Writes benchmarks/results/gate_general.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from results_io import write_results

from reverie.config import EvalConfig
from reverie.cycle import ensure_release
from reverie.data.multiple_choice import load_choice_items
from reverie.engines.libraries import quiet_libraries
from reverie.engines.models import load_version
from reverie.engines.scoring import continuation_logprobs
from reverie.engines.suites.general import choice_logprobs
from reverie.stats import PRIOR_FLIP_RATE, paired_items_needed, paired_power
from reverie.workspace import Workspace


def timed(score, rows) -> tuple[list[float], float]:
    start = time.perf_counter()
    scores = score(rows)
    return scores, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=300, help="built-in items both scorers score")
    parser.add_argument("--state", default="benchmarks/.cache/gate_general")
    parser.add_argument("--out", default="benchmarks/results/gate_general")
    args = parser.parse_args()
    quiet_libraries()
    state = Path(args.state)
    if not (state / "reverie.yaml").exists():
        Workspace.init(state)
    ws = Workspace.open(state)
    loaded = load_version(ws, ws.registry.get_model(ensure_release(ws)), inference=True)
    model, tokenizer = loaded.model, loaded.tokenizer
    batch = ws.config.eval.batch_size * 2  # rows per forward pass, as GeneralSuite scores them

    def rows_of(items):
        return [(tokenizer(item.goal)["input_ids"], tokenizer(" " + c.strip(), add_special_tokens=False)["input_ids"])
                for item in items for c in item.choices]

    default = EvalConfig().general_limit
    every = load_choice_items("builtin", Path("."), default)
    sample = rows_of(every[:: max(1, len(every) // args.sample)][: args.sample])  # spread over the families
    choice_logprobs(model, tokenizer, sample[:batch], batch)  # warm-up
    before, old_s = timed(lambda r: continuation_logprobs(model, tokenizer, r, batch), sample)
    after, new_s = timed(lambda r: choice_logprobs(model, tokenizer, r, batch), sample)
    same = max(abs(a - b) for a, b in zip(before, after))
    _, full_s = timed(lambda r: choice_logprobs(model, tokenizer, r, batch), rows_of(every))
    needed = paired_items_needed(0.02, PRIOR_FLIP_RATE)
    result = {
        "model": "SmolLM2-135M-Instruct (embedded)", "threads": torch.get_num_threads(), "batch_rows": batch,
        "sample_items": len(sample) // 2, "old_s": old_s, "new_s": new_s, "speedup": old_s / new_s,
        "max_logprob_difference": same, "default_items": len(every), "default_check_s": full_s,
        "default_check_old_s_estimate": full_s * old_s / new_s, "items_needed": needed,
        "power_at_default": paired_power(0.02, len(every), PRIOR_FLIP_RATE),
    }
    table = [
        "| scorer | items | wall s | items/s |", "|---|---|---|---|",
        f"| continuation_logprobs (before) | {len(sample) // 2} | {old_s:.1f} | {len(sample) / 2 / old_s:.1f} |",
        f"| choice_logprobs (general suite now) | {len(sample) // 2} | {new_s:.1f} | {len(sample) / 2 / new_s:.1f} |",
        f"| choice_logprobs, the whole default check | {len(every)} | {full_s:.1f} | {len(every) / full_s:.1f} |",
        "",
        f"Speed-up on the same items: {old_s / new_s:.2f}x (log-likelihoods agree to {same:.1e}). The default check "
        f"({len(every)} built-in items; {needed} needed for power 0.8 at a 2-point drop and a 13% flip rate; power "
        f"{result['power_at_default']:.2f}) costs {full_s:.0f} s per model version here "
        f"(about {full_s * old_s / new_s:.0f} s with the old scorer). {torch.get_num_threads()} torch threads, "
        f"{batch} rows per forward pass, one run on a shared machine.",
    ]
    write_results(args.out, result, "\n".join(table))


if __name__ == "__main__":
    main()
