"""The sleep cycle: the one place that knows the order Learn -> Compress -> Dream -> Gate.

Every phase run is recorded before and after it runs. A cycle killed at any moment resumes from its last
finished phase; a cycle moves the release pointer only in the final transaction that closes it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reverie.cycle_inputs import CycleInputs, freeze_inputs, load_inputs, waiting_for_next_cycle
from reverie.data.knowledge import load_knowledge
from reverie.data.multiple_choice import load_choice_items
from reverie.data.passages import load_passages
from reverie.data.preference import load_preference_prompts
from reverie.data.redteam import load_safety_items
from reverie.data.splits import reading_as
from reverie.engines.front import reasoning_items
from reverie.engines.models import resolve_source
from reverie.engines.preference_judge import judge_record
from reverie.errors import ReverieError
from reverie.memory.store import MemoryStore, current_knowledge
from reverie.metrics import higher_is_better
from reverie.model_card import lineage
from reverie.phases.base import Phase, PhaseContext
from reverie.phases.compress import Compress
from reverie.phases.dream import Dream
from reverie.phases.gate import Gate
from reverie.phases.learn import Learn, accelerate_config
from reverie.phases.outputs import GateVerdict, gate_scores, gate_verdicts, read_output
from reverie.phases.strategies.cot_consistency import reasoning_set
from reverie.phases.strategies.grpo import policy_reward_model
from reverie.progress import status_line
from reverie.registry import Cycle, ModelRecord, PhaseRun
from reverie.workspace import Workspace, code_version

PHASES: tuple[Phase, ...] = (Learn(), Compress(), Dream(), Gate())


@dataclass
class CycleOutcome:
    cycle_id: str
    released: bool
    model_id: str
    reasons: list[str]
    candidate_scores: dict[str, float]
    reference_scores: dict[str, float]


def ensure_release(workspace: Workspace) -> str:
    """The current release; until a cycle has released, the configured base model is the release.

    The source is resolved (and a GGUF converted) first, so that a bad model.source fails here, before it is
    recorded; a changed model.source re-bootstraps a workspace that has released nothing yet.
    """
    registry = workspace.registry
    source = workspace.config.model.source
    current = registry.get_alias()
    if current:
        release = registry.get_model(current)
        released_any = any(e.action == "release" for e in registry.release_events())
        if released_any or release.source == source:
            return current
    resolve_source(source, workspace.cache_dir, workspace.root)
    base = ModelRecord(
        id=f"m-{uuid.uuid4().hex[:10]}", status="base", source=source,
        config_hash=workspace.config.fingerprint(), code_version=code_version(), created_at=time.time(),
    )
    registry.bootstrap(base)
    return base.id


def check_inputs(workspace: Workspace) -> None:
    """Check the config and every file it names before a cycle opens, and report all their problems in one
    error: a mistake found inside a phase would leave an interrupted cycle behind, to be abandoned."""
    config, root = workspace.config, workspace.root  # a broken config names no files to check: it fails alone
    evaluation, passages = config.eval, config.dream.seal.passages
    checks: dict[str, Callable[[], object]] = {
        "data.knowledge": lambda: load_knowledge(config.data.knowledge, root),
        "eval.general_suite": lambda: load_choice_items(evaluation.general_suite, root, evaluation.general_limit),
        "eval.advbench": lambda: load_safety_items(evaluation.advbench, root, "eval.advbench"),
        "eval.xstest": lambda: load_safety_items(evaluation.xstest, root, "eval.xstest"),
    }
    if config.learn.accelerate_config:
        checks["learn.accelerate_config"] = lambda: accelerate_config(workspace)
    if passages != "knowledge":
        checks["dream.seal.passages"] = lambda: load_passages(root / Path(passages).expanduser())
    if config.dream.enabled and "cot-consistency" in config.dream.strategies and config.dream.cot.reasoning:
        checks["dream.cot.reasoning"] = lambda: reasoning_set(workspace)
    front = config.compress.front
    if config.compress.strategies and front.reasoning:
        checks["compress.front.reasoning"] = lambda: reasoning_items(front.reasoning, root, front.reasoning_limit,
                                                                     evaluation.general_suite)
    if "preference" in evaluation.suites:
        checks["eval.preference_prompts"] = lambda: load_preference_prompts(evaluation.preference_prompts, root, 1)
        checks["eval.preference_judge"] = lambda: judge_record(workspace, evaluation.preference_judge)
    grpo = config.align.grpo
    if config.dream.enabled and "grpo" in config.dream.strategies and "reward_model" in grpo.rewards:
        checks["align.grpo.reward_alias"] = lambda: policy_reward_model(workspace, grpo.reward_alias)
    problems = _failures(checks)
    if "data.knowledge" not in problems:  # the documents in short-term memory join the knowledge drop
        problems |= _failures({"short-term memory": lambda: current_knowledge(workspace)})
    if problems:
        listed = "\n".join(f"  {key}: " + problem.replace("\n", "\n  ") for key, problem in problems.items())
        raise ReverieError(f"nothing was run or recorded: {len(problems)} input(s) have problems\n{listed}")


def _failures(checks: dict[str, Callable[[], object]]) -> dict[str, str]:
    """The message of each check that raised, by the config key (or input) it checks."""
    failures = {}
    for key, check in checks.items():
        try:
            check()
        except (ReverieError, OSError) as exc:
            failures[key] = str(exc).removeprefix(f"{key}: ")
    return failures


def _open_cycle(workspace: Workspace, resume: bool) -> tuple[Cycle, CycleInputs]:
    registry = workspace.registry
    unfinished = registry.unfinished_cycle()
    if unfinished and not resume:
        raise ReverieError(f"cycle {unfinished.id} was interrupted; continue it with `reverie cycle --resume`")
    if resume:
        if not unfinished:
            raise ReverieError("there is no interrupted cycle to resume (start one with `reverie cycle`)")
        if unfinished.config_hash != workspace.config.fingerprint():
            raise ReverieError(
                f"the configuration differs from the one cycle {unfinished.id} started with (reverie.yaml plus "
                "any --set values): restore it, repeating the same --set values, to resume; "
                "or abandon the cycle with `reverie cycle --abandon`"
            )
        if unfinished.inputs is None:  # started before inputs were frozen: they are frozen now, once
            unfinished.inputs, _ = freeze_inputs(workspace, unfinished.id)
            registry.set_cycle_inputs(unfinished.id, unfinished.inputs)
        inputs = load_inputs(workspace, unfinished)
        stale = registry.interrupt_running_phases(unfinished.id)
        removed = workspace.artifacts.collect_garbage(registry.referenced_artifacts())
        status_line(
            f"resuming cycle {unfinished.id}: {stale} interrupted phase run(s), {len(removed)} orphaned artifact(s) removed"
        )
        for line in waiting_for_next_cycle(workspace, inputs):
            status_line(line)
        return unfinished, inputs
    cycle_id, base_model_id = f"c-{uuid.uuid4().hex[:10]}", ensure_release(workspace)
    frozen, inputs = freeze_inputs(workspace, cycle_id)
    cycle = Cycle(id=cycle_id, status="running", base_model_id=base_model_id,
                  config_hash=workspace.config.fingerprint(), started_at=time.time(), inputs=frozen)
    registry.start_cycle(cycle)
    status_line(f"cycle {cycle.id} started from release {cycle.base_model_id}")
    return cycle, inputs


def run_cycle(workspace: Workspace, resume: bool = False, until: str | None = None) -> CycleOutcome | None:
    """Run (or resume) one sleep cycle and release or reject its candidate.

    With `until` (a phase name) it stops after that phase and returns None, leaving the cycle open for the next
    `resume` (a rhythm splits a cycle across slots that way: reverie/rhythms/).
    """
    names = [phase.name for phase in PHASES]
    if until is not None and until not in names:
        raise ReverieError(f"until: {until!r} is no phase (choose from {', '.join(names)})")
    registry = workspace.registry
    with workspace.cycle_lock():
        check_inputs(workspace)
        cycle, inputs = _open_cycle(workspace, resume)
        handoff = {r.phase: read_output(r) for r in registry.phase_runs(cycle.id) if r.status == "finished"}
        for phase in PHASES[: names.index(until) + 1] if until else PHASES:
            if phase.name in handoff:
                status_line(f"[dim]{phase.name:<8} already finished, skipped[/dim]")
                continue
            ctx = PhaseContext(workspace, cycle, inputs, dict(handoff))
            run = PhaseRun(
                id=f"r-{uuid.uuid4().hex[:10]}", cycle_id=cycle.id, phase=phase.name, status="running",
                inputs={"model": ctx.candidate().id, "config_hash": cycle.config_hash},
                started_at=time.time(),
            )
            registry.start_phase(run)
            status_line(f"[bold]{phase.name:<8}[/bold] running on {run.inputs['model']}")
            try:
                with reading_as(phase.name):  # only the Gate may read held-out items (data/splits.py)
                    result = phase.run(ctx)
            except BaseException as exc:
                registry.fail_phase(run.id, f"{type(exc).__name__}: {exc}")
                status_line(f"{phase.name} stopped ({type(exc).__name__}); continue with `reverie cycle --resume`")
                raise
            output = result.output
            registry.finish_phase(run, output.model_dump(mode="json"), output.artifacts(), result.metrics,
                                  result.new_models, result.new_datasets)
            handoff[phase.name] = output
            figures = ", ".join(f"{k}={v:.4g}" for k, v in list(result.metrics.items())[:4])
            status_line(f"{phase.name:<8} done in {time.time() - run.started_at:.1f}s -> {output.model}  {figures}")

        if "gate" not in handoff:  # stopped after `until`: the cycle stays open for the next slot
            status_line(f"cycle {cycle.id}: stopped after {until}, left open (`reverie cycle --resume` continues it)")
            return None
        verdict = GateVerdict.model_validate(handoff["gate"])
        released = verdict.released
        registry.close_cycle(cycle.id, "released" if released else "rejected", verdict.model, released)
        if released and verdict.recalled_memory:  # recalled closed-book by the new release
            MemoryStore(workspace).retire(verdict.recalled_memory, verdict.model)
        status_line(
            f"cycle {cycle.id}: {'released' if released else 'rejected'} {verdict.model}"
            + ("" if released else " (" + "; ".join(verdict.reasons) + "); still serving " + verdict.reference)
        )
        return CycleOutcome(
            cycle.id, released, verdict.model, verdict.reasons, verdict.candidate_scores, verdict.reference_scores,
        )


def abandon_cycle(workspace: Workspace) -> str:
    """Close an interrupted cycle without a verdict, so a new one can start."""
    registry = workspace.registry
    with workspace.cycle_lock():
        cycle = registry.unfinished_cycle()
        if not cycle:
            raise ReverieError("there is no interrupted cycle to abandon")
        registry.interrupt_running_phases(cycle.id)
        registry.abandon_cycle(cycle.id)
        workspace.artifacts.collect_garbage(registry.referenced_artifacts())
        return cycle.id


MIN_REASON_CHARS = 10


def release_line(workspace: Workspace) -> list[str]:
    """The releases the current one stands on, oldest first, the current one last: a release (or override, or
    promotion) adds its model, a rollback goes back to the model it names, a bootstrap starts the line anew."""
    line: list[str] = []
    for event in workspace.registry.release_events():
        if event.action == "bootstrap":
            line = [event.model_id]
        elif event.action == "rollback" and event.model_id in line[:-1]:
            del line[len(line) - line[-2::-1].index(event.model_id) - 1:]
        else:
            line.append(event.model_id)
    return line


def _rollback_target(workspace: Workspace, earlier: list[str], to: str, metric: str | None) -> tuple[str, str]:
    """The release to go back to among `earlier` (oldest first) and why, as the release event records it."""
    if metric is not None and to != "best":
        raise ReverieError(f"--metric {metric} ranks releases only with --to best (not --to {to})")
    if to == "previous":
        return earlier[-1], "back to the previous release"
    if to == "best":
        if not metric:
            raise ReverieError("--to best needs --metric NAME, the Gate metric that ranks the releases (e.g. "
                               "knowledge.accuracy; `reverie eval --list` lists them)")
        scores = gate_scores(workspace.registry)
        scored = {model: scores[model][metric] for model in earlier if metric in scores.get(model, {})}
        if not scored:
            available = sorted({name for model in earlier for name in scores.get(model, {}) if "/" not in name})
            raise ReverieError(f"--metric {metric}: no earlier release ({', '.join(earlier)}) has a Gate score for it; "
                               + (f"their scores: {', '.join(available)}" if available else "no Gate scored them"))
        sign = 1 if higher_is_better(metric) else -1
        best = max(reversed(list(scored)), key=lambda model: sign * scored[model])  # a tie: the newest release
        return best, f"best by {metric} ({scored[best]:.3f}) of {len(scored)} earlier release(s) the Gate scored"
    if to not in earlier:
        record = workspace.registry.get_model(to)  # an unknown id is named as such
        raise ReverieError(f"--to {to}: {record.id} ({record.status}) is not an earlier release; the earlier "
                           f"releases are {', '.join(earlier)} (--to previous, best or one of these)")
    return to, f"to {to}, chosen by id"


def rollback(workspace: Workspace, to: str = "previous", metric: str | None = None,
             reason: str | None = None) -> tuple[str, str]:
    """Point the release alias back at an earlier release: the previous one, the best by a Gate metric (`to`
    "best" with `metric`) or one by id; return (from, to). The choice, and `reason` if given (a live alarm's),
    are kept on the release event.

    Refused while a cycle is open, since that cycle is gated against the current release.
    """
    registry = workspace.registry
    with workspace.cycle_lock():
        if registry.unfinished_cycle():
            raise ReverieError("a cycle is open: finish it (`reverie cycle --resume`) or abandon it first")
        line = release_line(workspace)
        current = line[-1] if line else None
        earlier = list(dict.fromkeys(model for model in line[:-1] if model != current))
        if not earlier:
            raise ReverieError("there is no earlier release to roll back to (see `reverie history`)")
        target, why = _rollback_target(workspace, earlier, to, metric)
        registry.set_alias(target, "rollback", reason="; ".join(filter(None, [why, reason])))
        kept_line = {model.id for model in lineage(workspace, registry.get_model(target))}
        if restored := MemoryStore(workspace).restore_unlearned(kept_line):
            status_line(f"memory: {len(restored)} document(s) recalled only by {current} are back in memory")
        return current, target


def override_release(workspace: Workspace, model_id: str, reason: str) -> None:
    """Release a candidate the Gate rejected, on a person's written reason (kept in the registry and the card).

    Refused while a cycle is open, for a model that was not rejected by a Gate, and when it crossed a red line.
    """
    if len(reason.strip()) < MIN_REASON_CHARS:
        raise ReverieError(f"--reason: write why the Gate's verdict is overridden (at least {MIN_REASON_CHARS} "
                           "characters); it goes into the registry and the model card")
    registry = workspace.registry
    with workspace.cycle_lock():
        if registry.unfinished_cycle():
            raise ReverieError("a cycle is open: finish it (`reverie cycle --resume`) or abandon it first")
        record = registry.get_model(model_id)
        gate = next((verdict for cycle in registry.list_cycles() if cycle.result_model_id == record.id
                     for verdict in gate_verdicts(registry.phase_runs(cycle.id))), None)
        if record.status != "rejected" or gate is None:
            raise ReverieError(f"{record.id} is {record.status}, not a candidate the Gate rejected")
        if not gate.overridable:
            raise ReverieError(f"{record.id} crossed a red line ({'; '.join(gate.reasons)}); red lines "
                               "cannot be overridden")
        registry.override_release(record.id, reason.strip())
        card = workspace.cards_dir / f"{record.id}.md"
        if card.is_file():
            workspace.write_text_atomic(card, card.read_text() + (
                f"\n## Override\n\nReleased by a person over the Gate's rejection "
                f"({'; '.join(gate.reasons)}) on {time.strftime('%Y-%m-%d %H:%M:%S')}. "
                f"Reason given: {reason.strip()}\n"))
