"""Rewrite smollm2_greedy.json from the embedded model: greedy answers to fixed prompts.

    .venv/bin/python tests/reference/regenerate.py

Run it only when a change is meant to alter the embedded model's outputs (a new conversion, a new package).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from reverie.config import ModelConfig
from reverie.engines.generation import generate
from reverie.engines.models import load_pretrained, resolve_source
from reverie.engines.prompts import user_prompt_ids

PROMPTS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "How many days are there in a week?",
    "What do bees make?",
    "Translate 'thank you' into French.",
]
REFERENCE = Path(__file__).with_name("smollm2_greedy.json")


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        loaded = load_pretrained(resolve_source("embedded", Path(cache), Path(cache)), ModelConfig())
        prompts = [user_prompt_ids(loaded.tokenizer, p) for p in PROMPTS]
        answers = generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens=24, batch_size=8)
    rows = [{"prompt": p, "greedy": a[0]} for p, a in zip(PROMPTS, answers)]
    REFERENCE.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
