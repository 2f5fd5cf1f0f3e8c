"""Every evaluation suite and the metrics it reports: the names that `gate` thresholds in reverie.yaml refer
to (`<suite>.<metric>`). Torch-free, so that the config can check a name before anything is loaded."""

from __future__ import annotations

import re

SUITES: dict[str, dict[str, str]] = {
    "knowledge": {
        "accuracy": "closed-book accuracy on the held-out questions about the consolidated documents",
        "f1": "closed-book token F1 on the same questions",
    },
    "general": {"accuracy": "multiple-choice accuracy by log-likelihood (PIQA format): forgetting shows here"},
    "advbench": {
        "refusal": "share of harmful requests refused (attack success rate = 1 - refusal)",
        "jailbreak_refusal": "share refused when wrapped in a jailbreak template (one template per request)",
    },
    "xstest": {
        "unsafe_refusal": "share of unsafe prompts refused",
        "safe_compliance": "share of safe look-alike prompts answered (1 - over-refusal)",
    },
    "structured": {
        "json_parse": "share of JSON requests answered with a parseable JSON object",
        "json_schema": "share of JSON requests whose object satisfies the requested JSON Schema",
        "tool_args": "share of tool-use requests with the right function name and arguments",
    },
    "long_context": {
        "recall": "share of facts hidden in a long input that the answer states",
        "citation": "share of answers citing the passage the fact was in",
    },
    "robustness": {
        "repetition": "share of repeated word 3-grams within an answer (lower is better)",
        "distinct_2": "distinct word bigrams per bigram within an answer",
        "abstention": "share of unanswerable questions where the model says it does not know "
        "(hallucination rate = 1 - abstention)",
    },
    "preference": {
        "win_rate": "mean probability, by the judge in both orders, that the candidate's answer is better than the "
        "current release's (a tie counts half)",
        "lc_win_rate": "length-controlled win rate: what the win rate would be at equal answer lengths (a logistic "
        "fit of the outcome on the length difference, read at zero)",
        "length": "mean length of the candidate's answers, in characters",
        "reference_length": "mean length of the current release's answers to the same prompts, in characters",
    },
    "redteam": {  # the red-team library's held-out half (the builtin sets while it is empty)
        "refusal": "share of held-out harmful requests refused as asked (plain); per category: refusal/<category>",
        "attack_success": "share of (harmful request, attack) pairs not refused, over every jailbreak template and "
        "mutation (lower is better); per attack: attack_success/<template or mutation>",
        "robust_refusal": "share of harmful requests refused both plain and reworded or after a multi-turn run-up; per "
        "mutation: robust_refusal/rephrase, robust_refusal/multi_turn",
        "over_refusal": "share of held-out safe look-alikes refused (lower is better); per category: "
        "over_refusal/<category>",
        "coverage": "share of the library's categories that have held-out items to score",
    },
    "false_premise": {  # not in the default eval.suites: `reverie eval --suite false_premise`, or list it
        "detection": "share of held-out questions asked with a false premise (a changed year, number or name) whose "
        "answer rejects it",
        "correction": "share of those whose answer also gives the document's value",
        "control": "share of the same questions asked with the true premise whose answer does not deny it",
    },
    # The panel below is opt-in (not in the default eval.suites): list a suite there, or `reverie eval --suite`.
    "cross_paragraph": {
        "accuracy": "share of two-hop questions answered, each needing facts from two paragraphs far apart in one "
        "long input",
        "bridge": "share of answers that name the linking fact's entity (the first hop found)",
    },
    "grounded": {
        "accuracy": "share of questions about a given document whose answer states the document's answer",
        "hallucination": "share of answers with a claim the document does not support (content words or numbers "
        "absent from it; lower is better)",
        "unsupported": "share of an answer's claims the document does not support (lower is better)",
    },
    "politeness": {
        "civil": "share of answers to rude or hostile prompts that contain no insult or hostility",
        "accuracy": "share of those answers that still give the asked-for answer",
    },
    "citation": {
        "cited": "share of answers with retrieved notes that cite one of them",
        "cited_right": "share of answers whose cited note (else the top note, the server's first citation) holds "
        "the answer",
        "brier": "Brier score of that note's retrieval score read as the chance it holds the answer (lower is better)",
        "ece": "expected calibration error of that score over 10 bins (lower is better)",
    },
}
SAFETY_SUITES = ("advbench", "xstest", "redteam")
LOWER_IS_BETTER = {"robustness.repetition", "redteam.attack_success", "redteam.over_refusal",
                   "grounded.hallucination", "grounded.unsupported", "citation.brier", "citation.ece"}


def known_metrics() -> list[str]:
    return [f"{suite}.{metric}" for suite, metrics in SUITES.items() for metric in metrics]


def suite_of(metric: str) -> str:
    return metric.split(".", 1)[0]


LM_EVAL_PREFIX = "lm-eval/"  # a suite that is an lm-evaluation-harness task: lm-eval/<task>
_HARNESS_SUITE = re.compile(r"lm-eval/[A-Za-z0-9_-]+")
_HARNESS_METRIC = re.compile(r"lm-eval/[A-Za-z0-9_-]+\.[A-Za-z0-9_,-]+")


def is_harness_suite(name: str) -> bool:
    """lm-eval/<task>: any local lm-evaluation-harness task, run as a suite (engines/harness.py)."""
    return _HARNESS_SUITE.fullmatch(name) is not None


def is_harness_metric(name: str) -> bool:
    """lm-eval/<task>.<metric>, the metric as lm-eval names it less a ',none' filter (acc, exact_match,strict-match):
    its names are known only once the task has run, so a threshold on one that the task lacks fails at the Gate."""
    return _HARNESS_METRIC.fullmatch(name) is not None


def higher_is_better(metric: str) -> bool:
    return metric.split("/", 1)[0] not in LOWER_IS_BETTER
