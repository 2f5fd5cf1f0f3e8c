"""The evaluation suites a model version is judged by (see reverie.metrics for their metrics)."""

from reverie.engines.suites.base import ItemResult, Suite, SuiteReport, flat_means
from reverie.engines.suites.runner import SuiteRunner

__all__ = ["ItemResult", "Suite", "SuiteReport", "SuiteRunner", "flat_means"]
