"""Run one sleep cycle on the embedded SmolLM2 and the demo knowledge in a fresh workspace made from the demo
preset (src/reverie/presets/demo.yaml), and report every Gate metric before and after, and wall time per phase.
One document is added to short-term memory first (as by day): it must be retrieved with a citation at once, and
the report shows whether the released model answers its questions closed-book after the night.

    .venv/bin/python benchmarks/demo_cycle.py [--out benchmarks/results/demo_cycle] [--set KEY=VALUE ...]

Writes <out>.json and <out>.md. Both columns are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from reverie.cycle import run_cycle
from reverie.cycle_inputs import load_inputs
from reverie.data.files import read_builtin
from reverie.data.splits import knowledge_held_out
from reverie.engines.suites import SuiteRunner
from reverie.memory.retrieval import ShortTermMemory
from reverie.memory.store import MEMORY_PREFIX, MemoryStore, current_knowledge
from reverie.phases.outputs import DreamOutput, LearnOutput, read_as
from reverie.workspace import Workspace

# The day document with the Gate's check questions and what users asked about it by day (Learn trains on these).
DAY = json.loads(read_builtin("demo/memory_document.json"))


def add_day_document(workspace: Workspace) -> dict:
    """Add the document to memory and ask its first question with retrieval: the top hit must be it."""
    memory = ShortTermMemory(workspace)
    document = memory.add(DAY["title"], DAY["text"], DAY["questions"], "demo_cycle", DAY["train_questions"])
    hits = memory.search(DAY["train_questions"][0]["question"])
    return {"id": document.id, "cited": bool(hits) and hits[0].document_id == document.id,
            "score": hits[0].score if hits else None}


def closed_book_memory_answers(workspace: Workspace, model_id: str, indices: list[int]) -> list[dict]:
    """The Gate's stored closed-book answers of `model_id` to the memory document's questions."""
    (items_file,) = (workspace.state / "evals" / model_id).glob("knowledge@*.jsonl")
    items = {row["id"]: row for row in map(json.loads, items_file.read_text().splitlines())}
    return [{"question": items[str(i)]["prompt"], "answer": items[str(i)]["output"],
             "correct": items[str(i)]["scores"]["accuracy"] == 1.0} for i in indices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/demo_cycle")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    hf_logging.set_verbosity_error()

    with tempfile.TemporaryDirectory() as tmp:
        Workspace.init(Path(tmp), preset="demo")
        workspace = Workspace.open(Path(tmp), args.overrides)
        day = add_day_document(workspace)
        memory_indices = [i for i, (doc, _) in enumerate(knowledge_held_out(current_knowledge(workspace)))
                          if doc.id.startswith(MEMORY_PREFIX)]
        started = time.time()
        outcome = run_cycle(workspace)
        total = time.time() - started
        phases = {r.phase: round(r.wall_s or 0.0, 1) for r in workspace.registry.phase_runs(outcome.cycle_id)}
        runs = {r.phase: r for r in workspace.registry.phase_runs(outcome.cycle_id)}
        dream = runs["dream"].metrics
        dream_output = read_as(runs["dream"], DreamOutput)
        dream_reason = dream_output.reason or next((s.reason for s in dream_output.strategies if not s.kept), None)
        night = closed_book_memory_answers(workspace, outcome.model_id, memory_indices)
        status = {d.id: d.status for d in MemoryStore(workspace).documents(status=None)}[day["id"]]
        # What Learn alone reached: its model on the Gate's knowledge suite (measured here, after the cycle; no
        # phase reads held-out questions, so the cycle itself never measures it).
        learned = workspace.registry.get_model(read_as(runs["learn"], LearnOutput).model)
        frozen = load_inputs(workspace, workspace.registry.get_cycle(outcome.cycle_id)).knowledge
        after_learn = SuiteRunner(workspace, frozen).report(learned, "knowledge").means()["accuracy"]

    result = {
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "overrides": args.overrides,
        "verdict": "released" if outcome.released else "rejected",
        "reasons": outcome.reasons,
        "before": outcome.reference_scores,
        "after_learn_knowledge_accuracy": after_learn,
        "after": outcome.candidate_scores,
        "dream": dream,
        "dream_reason": dream_reason,
        "phase_wall_s": phases,
        "memory": {"day": day, "night_closed_book": night, "status_after": status},
        "cycle_wall_s": round(total, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    shown = [k for k in outcome.candidate_scores if "/" not in k]
    lines = ["| metric | before (base) | after (candidate) |", "|---|---|---|"]
    lines += [f"| {k} | {outcome.reference_scores[k]:.3f} | {outcome.candidate_scores[k]:.3f} |" for k in shown]
    if after_learn is not None:
        lines += ["", f"Closed-book accuracy after Learn alone (before Dream): {after_learn:.3f}."]
    if "dream_self_edit_items" in dream:
        trained = "trained" if dream["dream_generator_trained"] else "untrained: the release"
        lines += ["", f"Dream (SEAL, generator {trained}): {dream['dream_self_edit_items']:.0f} self-edit items "
                  f"trained on, {dream['dream_items_quarantined']:.0f} quarantined by the quality gate."]
    if "dream_probe_accuracy_before" in dream:
        verdict = dream_reason or "kept"
        lines += [f"Dream's A/B check, closed-book accuracy on the training questions: "
                  f"{dream['dream_probe_accuracy_before']:.3f} before, {dream['dream_probe_accuracy_after']:.3f} "
                  f"after: {verdict}. Answer loss on them (recorded, not judged): "
                  f"{dream['dream_probe_loss_before']:.4f} before, {dream['dream_probe_loss_after']:.4f} after "
                  "(nats per token)."]
    recalled = sum(a["correct"] for a in night)
    lines += ["", f"Short-term memory: the day document was retrieved with a citation at once: {day['cited']} "
              f"(cosine {day['score']:.2f}). After the night the candidate answered {recalled} of {len(night)} of its "
              f"questions closed-book ({'; '.join(repr(a['answer'][:60]) for a in night)}); document status: "
              f"{status}."]
    lines += ["", f"Verdict: {result['verdict']}. Cycle wall time {total:.0f} s "
              f"({', '.join(f'{p} {s:.0f} s' for p, s in phases.items())})."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
