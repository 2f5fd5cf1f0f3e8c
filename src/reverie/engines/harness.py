"""lm-evaluation-harness adapter: any lm-eval task whose data is local runs on a reverie model version, as the
suite `lm-eval/<task>` (engines/suites/lm_eval.py) whose metrics are thresholded like any suite's.

Optional: `pip install "reverie[harness]"`. Tasks come from YAML files in eval.harness_include, else from lm-eval's
registry; the hub is never contacted (HF_DATASETS_OFFLINE), so a task must read local files, for example
`dataset_path: json` with `dataset_kwargs: {data_files: {validation: /data/piqa.jsonl}}`. Each document's result
(lm-eval's logged samples) becomes an item, so a metric gets an interval and a paired regression check; a metric is
the per-document mean, which is lm-eval's own figure for the usual mean-aggregated ones (acc, acc_norm,
exact_match) and not for corpus-level ones (BLEU, F1 over a corpus), which carry no per-document number and are
left out, as are metrics lm-eval marks lower-is-better (the Gate reads every harness metric as higher-is-better).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.errors import ReverieError
from reverie.metrics import LM_EVAL_PREFIX

NO_FILTER = "none"  # lm-eval's name for a metric's unfiltered responses: dropped from reverie's metric names


def metric_name(metric: str, filter_name: str) -> str:
    """lm-eval's `acc,none` is reverie's `acc`; a filtered metric keeps its filter: `exact_match,strict-match`."""
    return metric if filter_name == NO_FILTER else f"{metric},{filter_name}"


def _task_manager(tasks: list[str], include: Path | None) -> Any:
    """The task YAMLs of `include` alone when they hold every task (indexing lm-eval's whole registry takes ~10 s),
    else lm-eval's registry too."""
    from lm_eval.tasks import TaskManager

    if include is not None:
        if not include.is_dir():
            raise ReverieError(f"eval.harness_include: {include} is not a folder of lm-eval task YAML files")
        local = TaskManager(include_path=str(include), include_defaults=False)
        if all(task in local.all_tasks for task in tasks):
            return local
    manager = TaskManager(include_path=str(include) if include else None)
    if unknown := [task for task in tasks if task not in manager.all_tasks]:
        raise ReverieError(f"{', '.join(LM_EVAL_PREFIX + t for t in unknown)}: no such task in lm-eval's registry or "
                           f"in {include or 'eval.harness_include (not set)'}")
    return manager


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tasks: list[str], include: Path | None,
             limit: int | None, batch_size: int) -> dict:
    """lm-eval's simple_evaluate output for `tasks`, offline, with its per-document samples."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise ReverieError('lm-eval/<task> suites need lm-evaluation-harness: pip install "reverie[harness]"') from None
    if not isinstance(model, torch.nn.Module):
        raise ReverieError(f"lm-eval/<task> suites run on transformers models; this version runs on "
                           f"{type(model).__name__} (set model.runtime: transformers to evaluate it with lm-eval)")
    manager = _task_manager(tasks, include)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    try:
        return simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=manager, log_samples=True,
                               bootstrap_iters=0)
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        raise ReverieError(f"lm-eval could not read a task's data ({exc}); only local data is supported") from None


def include_digest(include: Path | None) -> str | None:
    """A changed task file is a changed suite: the YAML files' contents, hashed."""
    if include is None or not include.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(include.rglob("*.yaml")):
        digest.update(str(path.relative_to(include)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def lm_eval_version() -> str | None:
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return None
