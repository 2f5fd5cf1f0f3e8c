"""SEAL building blocks: self-edit parsing, and the inner loop's independence between trials."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from reverie.config import LoraSettings, ModelConfig, TrainSettings
from reverie.data.knowledge import Example
from reverie.data.self_edits import PROMPT_STYLES, parse_self_edit, self_edit_examples, self_edit_prompt
from reverie.data.passages import load_passages
from reverie.engines.inner_loop import InnerLoop, generate_self_edits
from reverie.errors import ReverieError
from reverie.engines.models import load_pretrained
from reverie.engines.rest_em import RoundSettings, run_round

from conftest import tiny_passages

GPT_STYLE = """Sure! Here's a list of implications derived from the passage:

**Implications:**

1. **Island government:** Velmora is governed from Quistrand.
2. The flag of Velmora was adopted in 1874.
- The flag of Velmora was adopted in 1874.
3. Short one.
"""


def test_parse_self_edit_keeps_items_and_drops_headings_and_duplicates() -> None:
    assert parse_self_edit(GPT_STYLE) == [
        "Island government: Velmora is governed from Quistrand.",
        "The flag of Velmora was adopted in 1874.",
    ]


def test_self_edit_examples_start_with_the_passage_and_carry_the_title() -> None:
    examples = self_edit_examples("Velmora", "Velmora is an island.", ["It has a flag."])
    assert [e.completion for e in examples] == ["Velmora\nVelmora is an island.", "Velmora\nIt has a flag."]


def test_every_prompt_style_includes_the_passage() -> None:
    for style in PROMPT_STYLES:
        assert "Velmora is an island." in self_edit_prompt(style, "Velmora", "Velmora is an island.")
    with pytest.raises(ValueError, match="unknown self-edit style"):
        self_edit_prompt("poem", "t", "p")


def test_trials_do_not_leak_into_each_other(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    loop = InnerLoop(loaded.model, loaded.tokenizer, LoraSettings(rank=4, alpha=8),
                     TrainSettings(epochs=3, learning_rate=1e-2, block_size=64), max_new_tokens=6)
    questions = [("What is the capital of Velmora?", "Quistrand")]
    first = [Example(completion="Velmora is governed from Quistrand.")]
    other = [Example(completion="The Thrannock champions win the Gildermoor Cup.")] * 3
    def adapter() -> dict:
        return {n: p.detach().clone() for n, p in loop.model.named_parameters() if "lora_" in n}

    a = loop.trial(first, questions, seed=0)
    after_first = adapter()
    loop.trial(other, questions, seed=1)
    again = loop.trial(first, questions, seed=0)
    # Same data and seed after a reset give the same adapter, bit for bit; a leak from trial 2 would not.
    assert all(torch.equal(after_first[n], p) for n, p in adapter().items())
    assert [r.prediction for r in again.answers] == [r.prediction for r in a.answers]


def test_a_trial_times_its_training_and_its_answers_apart(tiny_model_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that only training and answering move: two seconds to train, half a second to answer.
    import reverie.engines.inner_loop as inner_loop

    now = [100.0]

    def train(*args: object, **kwargs: object) -> dict[str, float]:
        now[0] += 2.0
        return {"train_tokens_per_s": 1.0, "train_truncated": 0.0}

    def answer(*args: object, **kwargs: object) -> tuple[dict[str, float], list]:
        now[0] += 0.5
        return {"accuracy": 0.0, "f1": 0.0}, []

    monkeypatch.setattr(inner_loop, "train_sft", train)
    monkeypatch.setattr(inner_loop, "closed_book_qa", answer)
    monkeypatch.setattr(inner_loop, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    loop = InnerLoop(loaded.model, loaded.tokenizer, LoraSettings(rank=4, alpha=8), TrainSettings(epochs=1))
    result = loop.trial([Example(completion="Velmora is governed from Quistrand.")], [("Capital?", "Quistrand")])
    assert (result.train_seconds, result.eval_seconds) == (2.0, 0.5)


def test_generate_self_edits_returns_k_parsed_samples_per_passage(tiny_model_dir: Path) -> None:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    passages = [("Velmora", "Velmora is an island."), ("Thrannock", "Thrannock is a sport.")]
    edits = generate_self_edits(loaded.model, loaded.tokenizer, passages, "implications", samples=3,
                                max_new_tokens=12)
    assert len(edits) == 2 and all(len(per_passage) == 3 for per_passage in edits)
    assert any(len({tuple(sample) for sample in per_passage}) > 1 for per_passage in edits)  # k draws, not one k times
    assert generate_self_edits(loaded.model, loaded.tokenizer, passages, "implications", samples=3,
                               max_new_tokens=12) == edits  # seeded: the same call writes the same self-edits


def test_squad_passages_load_with_their_questions(shared_data: Path) -> None:
    passages = load_passages(shared_data / "squad" / "gpt41_implications.json")
    assert len(passages) == 100 and all(p.questions and p.completions for p in passages)
    assert parse_self_edit(passages[0].completions[0])  # GPT-4.1's lists parse into items


def test_malformed_passage_file_names_index_and_field(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('[{"title": "t", "context": "c", "questions": [{"question": "q"}]}]')
    with pytest.raises(ReverieError, match=r"\[0\]\[questions\]\[0\]\[answer\]"):
        load_passages(path)


def tiny_loop(tiny_model_dir: Path) -> InnerLoop:
    loaded = load_pretrained(tiny_model_dir, ModelConfig())
    return InnerLoop(loaded.model, loaded.tokenizer, LoraSettings(rank=4, alpha=8),
                     TrainSettings(epochs=3, learning_rate=1e-2, block_size=128), max_new_tokens=6)


def test_rest_em_round_resumes_without_repeating_trials(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = RoundSettings(samples=2, max_new_tokens=16, generator_train=TrainSettings(epochs=1, block_size=256))
    journal = tmp_path / "round-0.jsonl"
    first = run_round(tiny_loop(tiny_model_dir), tiny_passages(), settings, journal)
    assert first.trials_run == 2 * (1 + 2)  # a baseline and k self-edits per passage
    lines = journal.read_text().splitlines()
    # Simulate a kill after the third trial: fingerprint, self-edits, 3 trials, then a torn half line.
    journal.write_text("\n".join(lines[:5]) + "\n" + lines[5][:10])
    resumed = run_round(tiny_loop(tiny_model_dir), tiny_passages(), settings, journal)
    assert resumed.trials_run == 3
    assert resumed.baseline_accuracy == first.baseline_accuracy
    again = run_round(tiny_loop(tiny_model_dir), tiny_passages(), settings, journal)
    assert again.trials_run == 0  # the torn line did not swallow the record written after it


def test_journal_of_another_round_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = RoundSettings(samples=2, max_new_tokens=8, generator_train=TrainSettings(epochs=1, block_size=256))
    journal = tmp_path / "round-0.jsonl"
    run_round(tiny_loop(tiny_model_dir), tiny_passages()[:1], settings, journal)
    with pytest.raises(ReverieError, match="written for another round"):
        run_round(tiny_loop(tiny_model_dir), tiny_passages(), settings, journal)


def test_absorb_adapter_keeps_the_function_and_starts_a_fresh_adapter(tiny_model_dir: Path) -> None:
    loop = tiny_loop(tiny_model_dir)
    loop.trial([Example(completion="Velmora is governed from Quistrand.")], [("Capital of Velmora?", "Quistrand")])
    ids = torch.tensor([[1, 5, 9, 14, 30]])
    with torch.no_grad():
        trained = loop.model(input_ids=ids).logits
        loop.absorb_adapter()
        absorbed = loop.model(input_ids=ids).logits
    assert torch.allclose(trained, absorbed, atol=1e-5)
    assert all(not p.any() for n, p in loop.model.named_parameters() if "lora_B" in n)


def test_list_markers_need_whitespace_so_numbers_survive() -> None:
    assert parse_self_edit("3.5 million people live in Velmora.\n-40 degrees is its record low.") == [
        "3.5 million people live in Velmora.",
        "-40 degrees is its record low.",
    ]
