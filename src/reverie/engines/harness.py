"""lm-evaluation-harness adapter: any lm-eval task whose data is local runs on a reverie model version.

Optional: `pip install "reverie[harness]"`. Tasks come from lm-eval's registry or from YAML files in
`include`; the hub is never contacted (HF_DATASETS_OFFLINE), so a task must read local files, for example
`dataset_path: json` with `dataset_kwargs: {data_files: {validation: /data/piqa.jsonl}}`.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.errors import ReverieError


def run_lm_eval(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tasks: list[str],
                include: Path | None, limit: int | None, batch_size: int) -> dict[str, dict[str, float]]:
    """task -> {metric: value} (numeric metrics only, as lm-eval names them, e.g. 'acc,none')."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ReverieError('the lm-eval adapter needs lm-evaluation-harness: pip install "reverie[harness]"') from None
    if include is not None and not include.is_dir():
        raise ReverieError(f"--lm-eval-include: {include} is not a folder of task YAML files")
    manager = TaskManager(include_path=str(include) if include else None)
    if unknown := [t for t in tasks if t not in manager.all_tasks]:
        raise ReverieError(f"--lm-eval {', '.join(unknown)}: no such task in lm-eval's registry or in "
                           f"{include or 'the --lm-eval-include folder (none given)'}")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu" if model.device.type ==
              "cpu" else str(model.device))
    try:
        output = simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=manager, log_samples=False,
                                 bootstrap_iters=1000)
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        raise ReverieError(f"lm-eval could not read a task's data ({exc}); only local data is supported") from None
    return {task: {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for task, metrics in output["results"].items()}
