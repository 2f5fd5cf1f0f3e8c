"""Model cards in the Hugging Face format: YAML front matter (base_model, datasets, model-index), then lineage."""

from __future__ import annotations

import time

import yaml

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


def _risks(candidate: dict[str, float], reference: dict[str, float], n_general: int, dreamed: set[str]) -> list[str]:
    risks = [
        "Knowledge is measured closed-book on a small question set; accuracy has a wide confidence interval.",
        "No safety suite is part of this gate yet: refusal behaviour is unmeasured.",
    ]
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
    drop = reference["general_accuracy"] - candidate["general_accuracy"]
    if drop > 0:
        risks.append(f"General accuracy fell by {drop:.3f} on {n_general} items (forgetting).")
    return risks


def render_model_card(
    workspace: Workspace,
    model: ModelRecord,
    released: bool,
    reasons: list[str],
    scores: dict[str, float],
    reference_scores: dict[str, float],
    knowledge_name: str,
    general_items: int,
) -> str:
    """The card for a gated candidate: scores beside the current release, lineage, datasets, risks."""
    registry = workspace.registry
    chain = lineage(workspace, model)
    datasets = [registry.get_dataset(h) for h in model.datasets]
    front = {
        "base_model": _base_model_name(chain[-1]),
        "library_name": "transformers",
        "tags": ["reverie", "sleep-cycle", "lora"],
        "datasets": [f"reverie/{d.name}@{d.hash[:12]}" for d in datasets],
        "model-index": [{
            "name": f"reverie-{model.id}",
            "results": [
                {
                    "task": {"type": "question-answering", "name": "Closed-book QA"},
                    "dataset": {"name": knowledge_name, "type": knowledge_name, "split": "eval_qa"},
                    "metrics": [
                        {"type": "accuracy", "name": "closed-book accuracy", "value": round(scores["knowledge_accuracy"], 4)},
                        {"type": "f1", "name": "token F1", "value": round(scores["knowledge_f1"], 4)},
                    ],
                },
                {
                    "task": {"type": "multiple-choice", "name": "General capability check"},
                    "dataset": {"name": workspace.config.eval.general_suite, "type": "piqa-format"},
                    "metrics": [{"type": "accuracy", "name": "accuracy", "value": round(scores["general_accuracy"], 4)}],
                },
            ],
        }],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# reverie model {model.id}", ""]
    verdict = "**release**" if released else "**reject**: " + "; ".join(reasons)
    lines += [f"Gate verdict: {verdict}. Written {time.strftime('%Y-%m-%d %H:%M:%S')}; `reverie history` shows "
              "whether the cycle then moved the release pointer.", ""]
    lines += ["## Scores", "", "| suite | this model | current release |", "|---|---|---|"]
    lines += [f"| {k} | {scores[k]:.3f} | {reference_scores[k]:.3f} |" for k in scores]
    lines += ["", "## Lineage", "", "| model | made by | weights | adapter | config | code |", "|---|---|---|---|---|---|"]
    for record in chain:
        made_by = f"{record.phase} (cycle {record.cycle_id})" if record.phase else f"base: {record.source}"
        lines.append(
            f"| {record.id} | {made_by} | {(record.weights or record.source or '-')[:12]} | "
            f"{(record.adapter or '-')[:12]} | {record.config_hash or '-'} | {record.code_version or '-'} |"
        )
    lines += ["", "## Datasets", "", "| name | sha256 | rows | source |", "|---|---|---|---|"]
    lines += [f"| {d.name} | {d.hash} | {d.rows} | {d.source} |" for d in datasets]
    if model.cycle_id:
        lines += ["", "## Phase metrics", "", "| phase | status | wall s | metrics |", "|---|---|---|---|"]
        for run in registry.phase_runs(model.cycle_id):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in run.metrics.items() if not k.startswith(("candidate_", "reference_")))
            wall = f"{run.wall_s:.1f}" if run.wall_s is not None else "-"
            lines.append(f"| {run.phase} | {run.status} | {wall} | {shown or '-'} |")
    methods = [d.name.rsplit("/dream-", 1)[1] for d in datasets if "/dream-" in d.name]
    dreamed = {"self-consistency" if m == "votes" else m for m in methods}  # 'votes': the name before Dream had methods
    lines += ["", "## Risks", ""] + [f"- {r}" for r in _risks(scores, reference_scores, general_items, dreamed)]
    return "\n".join(lines) + "\n"
