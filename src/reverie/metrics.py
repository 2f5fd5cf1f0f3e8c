"""Every evaluation suite and the metrics it reports: the names that `gate` thresholds in reverie.yaml refer
to (`<suite>.<metric>`). Torch-free, so that the config can check a name before anything is loaded."""

from __future__ import annotations

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
}
SAFETY_SUITES = ("advbench", "xstest")
LOWER_IS_BETTER = {"robustness.repetition"}


def known_metrics() -> list[str]:
    return [f"{suite}.{metric}" for suite, metrics in SUITES.items() for metric in metrics]


def suite_of(metric: str) -> str:
    return metric.split(".", 1)[0]


def higher_is_better(metric: str) -> bool:
    return metric.split("/", 1)[0] not in LOWER_IS_BETTER
