"""An lm-evaluation-harness task as a Gate suite, `lm-eval/<task>` in eval.suites: each document lm-eval scored
(its logged samples) becomes an item, so the task's metrics get intervals, paired regression checks and gate
thresholds (`lm-eval/<task>.acc`) like any suite's. Running the harness: engines/harness.py."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.engines.harness import evaluate, include_digest, lm_eval_version, metric_name
from reverie.engines.suites.base import ItemResult, fingerprint
from reverie.errors import ReverieError
from reverie.metrics import LM_EVAL_PREFIX
from reverie.progress import status_line

OUTPUT_CHARS = 500  # of a document's filtered responses, kept as the item's output


def sample_items(samples: dict[str, list[dict]], higher_is_better: dict[str, dict[str, bool]]) -> list[ItemResult]:
    """One item per document (id `<subtask>/<doc id>` in a group of tasks), holding its numeric metrics that are
    higher-is-better."""
    items: dict[str, ItemResult] = {}
    for task, rows in samples.items():
        for row in rows:
            doc = f"{task}/{row['doc_id']}" if len(samples) > 1 else str(row["doc_id"])
            arguments = row.get("arguments") or [[""]]
            item = items.setdefault(doc, ItemResult(doc, str(arguments[0][0]), "", {}, {"target": str(row["target"])}))
            for metric in row["metrics"]:
                value = row.get(metric)
                if isinstance(value, (bool, int, float)) and higher_is_better.get(task, {}).get(metric, True):
                    item.scores[metric_name(metric, row["filter"])] = float(value)
            item.output = item.output or str(row.get("filtered_resps", ""))[:OUTPUT_CHARS]
    return list(items.values())


class HarnessSuite:
    def __init__(self, task: str, include: Path | None, limit: int | None, batch_size: int):
        self.task = task
        self.name = f"{LM_EVAL_PREFIX}{task}"
        self.include = include
        self.limit = limit
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint(self.task, include_digest(self.include), self.limit, lm_eval_version())

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        status_line(f"{self.name}: lm-evaluation-harness")
        output = evaluate(model, tokenizer, [self.task], self.include, self.limit, self.batch_size)
        items = sample_items(output["samples"], output.get("higher_is_better", {}))
        if not any(item.scores for item in items):
            raise ReverieError(f"{self.name}: the task reported no per-document numeric metric to gate on")
        return items
