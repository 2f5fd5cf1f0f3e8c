"""Structured output: JSON objects that must parse and satisfy a JSON Schema, and tool calls whose function
name and arguments must match the expected call."""

from __future__ import annotations

import json
import re

import jsonschema
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reverie.data.files import read_builtin
from reverie.engines.generation import generate
from reverie.engines.prompts import user_prompt_ids
from reverie.engines.suites.base import ItemResult, fingerprint

TOOL_PROMPT = (
    "You can call these functions:\n{tools}\n\nCall the right function for the request below. Reply with only a "
    'JSON object of the form {{"name": "<function>", "arguments": {{...}}}}.\n\nRequest: {request}'
)


def load_structured_items() -> list[dict]:
    text = read_builtin("demo/structured.jsonl")
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def extract_json_object(text: str) -> dict | None:
    """The first JSON object in the text (code fences and surrounding prose allowed), or None."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text[match.start():])
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _same(value: object, expected: object) -> bool:
    """Argument equality that forgives case and surrounding space in strings and int/float spelling."""
    if isinstance(expected, str):
        return isinstance(value, str) and value.strip().lower() == expected.strip().lower()
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        try:
            return float(value) == float(expected)
        except (TypeError, ValueError):
            return False
    return value == expected


def call_matches(call: dict | None, expected: dict) -> bool:
    if not call or call.get("name") != expected["name"] or not isinstance(call.get("arguments"), dict):
        return False
    arguments, wanted = call["arguments"], expected["arguments"]
    return arguments.keys() == wanted.keys() and all(_same(arguments[k], v) for k, v in wanted.items())


class StructuredSuite:
    name = "structured"

    def __init__(self, answer_tokens: int, batch_size: int):
        self.items = load_structured_items()
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return fingerprint(self.items, self.answer_tokens)

    def _prompt(self, item: dict) -> str:
        if item["kind"] == "json":
            return item["prompt"]
        return TOOL_PROMPT.format(tools=json.dumps(item["tools"], indent=1), request=item["prompt"])

    def run(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[ItemResult]:
        prompts = [self._prompt(item) for item in self.items]
        outputs = [o[0] for o in generate(model, tokenizer, [user_prompt_ids(tokenizer, p) for p in prompts],
                                          self.answer_tokens, self.batch_size, description="structured output")]
        results = []
        for index, (item, prompt, output) in enumerate(zip(self.items, prompts, outputs)):
            parsed = extract_json_object(output)
            if item["kind"] == "json":
                valid = parsed is not None and jsonschema.Draft7Validator(item["schema"]).is_valid(parsed)
                scores = {"json_parse": float(parsed is not None), "json_schema": float(valid)}
                detail = {"schema": item["schema"]}
            else:
                scores = {"tool_args": float(call_matches(parsed, item["expected"]))}
                detail = {"expected": item["expected"]}
            results.append(ItemResult(str(index), prompt, output, scores, detail))
        return results
