"""What every suite shares: per-item results, so that a suite's number can be traced to its items."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.stats import Interval, bootstrap_ci


@dataclass
class ItemResult:
    id: str
    prompt: str
    output: str
    scores: dict[str, float]  # metric -> this item's value; an item carries only the metrics it bears on
    detail: dict = field(default_factory=dict)  # what the grader compared against (gold answer, expected call…)


class Suite(Protocol):
    name: str

    def fingerprint(self) -> str:
        """Identifies the items and settings: a changed suite is run again, an unchanged one never."""
        ...

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]: ...


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class SuiteReport:
    suite: str
    key: str  # suite@fingerprint: where its metrics are stored
    items: list[ItemResult]
    seconds: float

    def values(self, metric: str) -> dict[str, float]:
        """item id -> value of `metric` (the part after the suite name), for items that carry it."""
        return {item.id: item.scores[metric] for item in self.items if metric in item.scores}

    def metrics(self) -> list[str]:
        return sorted({name for item in self.items for name in item.scores})

    def means(self) -> dict[str, float]:
        """metric -> mean over the items that carry it (no interval: cheap)."""
        return {m: sum(v := list(self.values(m).values())) / len(v) for m in self.metrics()}

    def summary(self, confidence: float = 0.95) -> dict[str, Interval]:
        return {m: bootstrap_ci(list(self.values(m).values()), confidence) for m in self.metrics()}


def flat_means(reports: dict[str, SuiteReport]) -> dict[str, float]:
    """`<suite>.<metric>` -> mean, for every metric of every report."""
    return {f"{name}.{metric}": mean for name, report in reports.items() for metric, mean in report.means().items()}
