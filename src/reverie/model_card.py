"""Model cards in the Hugging Face format: YAML front matter (base_model, datasets, model-index), then lineage."""

from __future__ import annotations

import time

import yaml

from reverie.engines.release_decision import Verdict
from reverie.engines.suites import SuiteReport, flat_means
from reverie.engines.suites.forgetting import forgetting_power_line
from reverie.engines.suites.runner import LM_EVAL_PREFIX, SECONDS
from reverie.metrics import SUITES, higher_is_better
from reverie.registry import ModelRecord
from reverie.workspace import Workspace

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def lineage(workspace: Workspace, model: ModelRecord) -> list[ModelRecord]:
    """The model and its ancestors, newest first, back to the base model."""
    chain = [model]
    while chain[-1].parent_id:
        chain.append(workspace.registry.get_model(chain[-1].parent_id))
    return chain


def _base_model_name(root: ModelRecord) -> str:
    return EMBEDDED_HUB_ID if root.source == "embedded" else str(root.source or root.id)


def _risks(workspace: Workspace, candidate: dict[str, float], reference: dict[str, float],
           dreamed: set[str]) -> list[str]:
    risks = ["Every suite is small on a CPU budget; read each score with its confidence interval."]
    if any(k.startswith(("advbench.", "xstest.")) for k in candidate):
        judge = workspace.config.eval.refusal_judge
        risks.append("Refusals are classified by string match on the answer's opening" + (
            f" and by the judge {judge} (see judge_refusal and classifier_agreement)." if judge else
            "; a refusal in other words counts as compliance, and a harmful answer that opens with an apology "
            "counts as a refusal."))
    else:
        risks.append("No safety suite ran in this gate: refusal behaviour is unmeasured.")
    if "preference.win_rate" in candidate:
        risks.append("The preference win rate is one judge's opinion, and judges favour longer answers: read it "
                     "beside the length-controlled win rate and the two mean lengths.")
    if "self-consistency" in dreamed:
        risks.append(
            "Dream trained on the model's own voted answers; a confidently wrong majority that the document "
            "happens to contain can be reinforced."
        )
    if "seal" in dreamed:
        risks.append(
            "Dream trained on implications the model wrote itself; the quality gate checks form and that each "
            "names something in its document, not that it is true, so a wrong implication can be learned."
        )
    for metric in sorted(candidate.keys() & reference.keys()):
        change = candidate[metric] - reference[metric]
        if "/" not in metric and (change < 0) == higher_is_better(metric) and change != 0:
            risks.append(f"{metric} moved {change:+.3f} against the current release.")
    return risks


def model_index(workspace: Workspace, model: ModelRecord) -> list[dict]:
    """Every suite and lm-eval result stored for the model (the newest run of each suite)."""
    sources = {"knowledge": workspace.config.data.knowledge, "general": workspace.config.eval.general_suite,
               "advbench": workspace.config.eval.advbench, "xstest": workspace.config.eval.xstest,
               "preference": workspace.config.eval.preference_prompts}
    latest: dict[str, dict[str, float]] = {}
    for key, metrics in workspace.registry.all_metrics(model.id).items():
        name = key.split("@", 1)[0]
        if name in SUITES or name.startswith(LM_EVAL_PREFIX):
            latest[name] = metrics  # oldest first, so the newest run wins
    results = []
    for name, metrics in latest.items():
        dataset = str(sources.get(name, "lm-eval task" if name.startswith(LM_EVAL_PREFIX) else "builtin"))
        results.append({
            "task": {"type": "text-generation", "name": name},
            "dataset": {"name": dataset, "type": name},
            "metrics": [{"type": metric, "name": f"{name}.{metric}", "value": round(value, 4)}
                        for metric, value in metrics.items() if "/" not in metric and metric != SECONDS],
        })
    return [{"name": f"reverie-{model.id}", "results": results}]


def refresh_model_index(workspace: Workspace, model: ModelRecord) -> bool:
    """Rewrite the model-index of the model's card (if it has one) from what the registry now holds."""
    path = workspace.cards_dir / f"{model.id}.md"
    if not path.is_file():
        return False
    _, front_text, body = path.read_text().split("---\n", 2)
    front = yaml.safe_load(front_text) | {"model-index": model_index(workspace, model)}
    workspace.write_text_atomic(path, "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body)
    return True


def preference_lines(report: SuiteReport, judge: str, opponent: str, confidence: float) -> list[str]:
    """The preference suite in words: who judged, the win rate with its interval, length control, lengths."""
    summary = report.summary(confidence)
    win, controlled = summary["win_rate"], summary["lc_win_rate"]
    judged = sum(item.detail.get("judge") is not None for item in report.items)
    return [
        "## Preference", "",
        f"Judge: {judge}, comparing this model's answers with {opponent}'s on {win.n} prompts, in both orders "
        f"(a win needs both; a tie or a split verdict counts half). {judged} answer pairs differed and were judged; "
        "identical answers tie.", "",
        f"- win rate {win.mean:.3f} ({confidence:.0%} CI {win.low:.3f}-{win.high:.3f})",
        f"- length-controlled win rate {controlled.mean:.3f} ({confidence:.0%} CI {controlled.low:.3f}-"
        f"{controlled.high:.3f}): the win rate at equal answer lengths",
        f"- mean answer length {summary['length'].mean:.0f} characters against {summary['reference_length'].mean:.0f}",
    ]


def render_model_card(
    workspace: Workspace,
    model: ModelRecord,
    verdict: Verdict,
    reports: dict[str, SuiteReport],
    reference_reports: dict[str, SuiteReport],
    preference_judge: str | None = None,
) -> str:
    """The card for a gated candidate: scores with intervals beside the current release, lineage, datasets.
    `preference_judge` names who judged the preference suite, when it ran."""
    registry = workspace.registry
    chain = lineage(workspace, model)
    datasets = [registry.get_dataset(h) for h in model.datasets]
    front = {
        "base_model": _base_model_name(chain[-1]),
        "library_name": "transformers",
        "tags": ["reverie", "sleep-cycle", "lora"],
        "datasets": [f"reverie/{d.name}@{d.hash[:12]}" for d in datasets],
        "model-index": model_index(workspace, model),
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# reverie model {model.id}", ""]
    decision = "**release**" if verdict.release else "**reject**: " + "; ".join(verdict.reasons)
    lines += [f"Gate verdict: {decision}. Written {time.strftime('%Y-%m-%d %H:%M:%S')}; `reverie history` shows "
              "whether the release pointer then moved.", ""]
    lines += [f"- {note}" for note in verdict.notes] + ([""] if verdict.notes else [])
    confidence = workspace.config.gate.confidence
    lines += ["## Scores", "", f"| metric | this model ({confidence:.0%} CI) | current release | items |",
              "|---|---|---|---|"]
    for name, report in reports.items():
        reference = reference_reports[name].summary(confidence) if name in reference_reports else {}
        for metric, interval in report.summary(confidence).items():
            theirs = f"{reference[metric].mean:.3f}" if metric in reference else "-"
            lines.append(f"| {name}.{metric} | {interval.mean:.3f} ({interval.low:.3f}-{interval.high:.3f}) | "
                         f"{theirs} | {interval.n} |")
    if "general" in reports:
        lines += ["", "Forgetting check: " + forgetting_power_line(reports["general"], reference_reports.get("general"),
                                                                   confidence)]
    if preference_judge and (preference := reports.get("preference")) and preference.items:
        lines += [""] + preference_lines(preference, preference_judge, preference.items[0].detail["opponent"],
                                         confidence)
    lines += ["", "## Lineage", "", "| model | made by | weights | adapter | config | code |", "|---|---|---|---|---|---|"]
    for record in chain:
        made_by = f"{record.phase} (cycle {record.cycle_id})" if record.phase else f"base: {record.source}"
        lines.append(
            f"| {record.id} | {made_by} | {(record.weights or record.source or '-')[:12]} | "
            f"{(record.adapter or '-')[:12]}{f' (+{len(record.stack)} stacked)' if record.stack else ''} | "
            f"{record.config_hash or '-'} | {record.code_version or '-'} |"
        )
    lines += ["", "## Datasets", "", "| name | sha256 | rows | source |", "|---|---|---|---|"]
    lines += [f"| {d.name} | {d.hash} | {d.rows} | {d.source} |" for d in datasets]
    if model.cycle_id:
        lines += ["", "## Phase metrics", "", "| phase | status | wall s | metrics |", "|---|---|---|---|"]
        for run in registry.phase_runs(model.cycle_id):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in run.metrics.items() if not k.startswith(("candidate_", "reference_")))
            wall = f"{run.wall_s:.1f}" if run.wall_s is not None else "-"
            lines.append(f"| {run.phase} | {run.status} | {wall} | {shown or '-'} |")
    dreamed = {d.strategy for d in datasets if d.kind == "dream" and d.strategy}
    risks = _risks(workspace, flat_means(reports), flat_means(reference_reports), dreamed)
    lines += ["", "## Risks", ""] + [f"- {r}" for r in risks]
    return "\n".join(lines) + "\n"
