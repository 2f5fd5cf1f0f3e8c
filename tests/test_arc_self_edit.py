"""ARC's data layer: self-edits parsed or rejected with a reason, the constrained template, task files checked
on load, grids read back from answers, and the loss on all tokens a self-edit may ask for."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from reverie.data.arc import load_arc_tasks, parse_grid, partial_credit
from reverie.data.arc_self_edit import (
    EXAMPLE, SLOT_CHOICES, InvalidSelfEdit, parse_arc_self_edit, slot_text, template_pieces,
)
from reverie.data.knowledge import Example
from reverie.errors import ReverieError

VALID = {
    "data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                        "use_chain_augmentations": True, "use_repeat_augmentations": False},
    "training": {"strategy": "train_using_all_tokens", "learning_rate": 3e-3, "num_train_epochs": 4},
}


def with_training(**changes: object) -> str:
    return json.dumps({**VALID, "training": {**VALID["training"], **changes}})


@pytest.mark.parametrize("wrapped", [
    f"Here is my choice: {json.dumps(VALID)} I hope it helps.",
    f"```json\n{json.dumps(VALID, indent=2)}\n```",
])
def test_a_valid_configuration_is_found_in_prose_or_a_fence(wrapped: str) -> None:
    edit = parse_arc_self_edit(wrapped)
    assert edit.families() == ["basic", "chain"]
    assert edit.loss_on_all_tokens and edit.training.learning_rate == 3e-3 and edit.training.num_train_epochs == 4


@pytest.mark.parametrize("text, reason", [
    ("I would use rotations and three epochs.", "no JSON object"),
    ('{"data_generation": {"use_basic_augmentations": true}', "not closed"),
    ('{"data_generation": {"use_basic_augmentations": True}}', "not valid JSON"),
    (json.dumps({**VALID, "data_generation": {"use_colour_augmentations": True}}),
     "data_generation.use_colour_augmentations"),
    (with_training(learning_rate=0.5), "training.learning_rate"),
    (with_training(learning_rate=1e-9), "training.learning_rate"),
    (with_training(num_train_epochs=2.5), "training.num_train_epochs"),
    (with_training(num_train_epochs="3"), "training.num_train_epochs"),
    (with_training(num_train_epochs=11), "training.num_train_epochs"),
    (with_training(num_train_epochs=0), "training.num_train_epochs"),
    (with_training(strategy="train_on_everything"), "training.strategy"),
    (json.dumps({"data_generation": VALID["data_generation"]}), "training"),
])
def test_an_unusable_self_edit_is_rejected_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidSelfEdit, match=reason):
        parse_arc_self_edit(text)


def test_the_canonical_text_round_trips() -> None:
    edit = parse_arc_self_edit(json.dumps(VALID))
    assert parse_arc_self_edit(edit.text()) == edit
    assert parse_arc_self_edit(EXAMPLE.text()) == EXAMPLE and "\n" not in EXAMPLE.text()


def test_every_filling_of_the_constrained_template_parses_to_its_choices() -> None:
    pieces = template_pieces()
    slots = [slot for _, slot in pieces if slot is not None]
    assert set(slots) == set(SLOT_CHOICES)
    for values in itertools.product(*(SLOT_CHOICES[slot] for slot in slots)):
        chosen = dict(zip(slots, values))
        text = "".join(literal + (slot_text(chosen[slot]) if slot else "") for literal, slot in pieces)
        edit = parse_arc_self_edit(text)
        dumped = {**edit.data_generation.model_dump(), **edit.training.model_dump()}
        assert dumped == chosen
        assert text == edit.text()  # what constrained decoding writes is what ReST-EM teaches


def grid_task(train: list[tuple[list, list]], test: list[list]) -> dict:
    return {"train": [{"input": a, "output": b} for a, b in train], "test": [{"input": g} for g in test]}


GOOD_TRAIN = [([[1, 2], [3, 4]], [[3, 4], [1, 2]]), ([[0, 5], [5, 0]], [[5, 0], [0, 5]])]


def write_pair(folder: Path, challenges: dict, solutions: dict) -> tuple[Path, Path]:
    (folder / "challenges.json").write_text(json.dumps(challenges))
    (folder / "solutions.json").write_text(json.dumps(solutions))
    return folder / "challenges.json", folder / "solutions.json"


def test_a_good_task_file_loads_with_its_test_outputs(tmp_path: Path) -> None:
    challenges, solutions = write_pair(
        tmp_path, {"flip": grid_task(GOOD_TRAIN, [[[7, 7, 7], [0, 1, 2]]])}, {"flip": [[[0, 1, 2], [7, 7, 7]]]})
    [task] = load_arc_tasks(challenges, solutions)
    assert task.id == "flip" and task.demonstrations() == GOOD_TRAIN
    assert task.test[0].output == [[0, 1, 2], [7, 7, 7]]
    assert load_arc_tasks(challenges)[0].test[0].output is None


@pytest.mark.parametrize("train, problem", [
    ([([[1, 2], [3]], [[1]]), *GOOD_TRAIN], "same length"),
    ([([[1, 10]], [[1]]), *GOOD_TRAIN], "colours 0 to 9"),
    (GOOD_TRAIN[:1], "at least 2"),
])
def test_a_bad_challenges_file_names_the_file_and_the_task(tmp_path: Path, train: list, problem: str) -> None:
    challenges, solutions = write_pair(tmp_path, {"ok": grid_task(GOOD_TRAIN, [[[1]]]), "broken": grid_task(
        train, [[[1]]])}, {"ok": [[[1]]], "broken": [[[1]]]})
    with pytest.raises(ReverieError) as caught:
        load_arc_tasks(challenges, solutions)
    assert str(challenges) in str(caught.value) and "[broken]" in str(caught.value)
    assert problem in str(caught.value) and "[ok]" not in str(caught.value)


@pytest.mark.parametrize("answers", [{"first": [[[1]]]}, {"first": [[[1]]], "second": [[[1]], [[2]]]}])
def test_a_solutions_file_without_one_output_per_test_input_names_the_task(tmp_path: Path, answers: dict) -> None:
    challenges, solutions = write_pair(tmp_path, {"first": grid_task(GOOD_TRAIN, [[[1]]]),
                                                  "second": grid_task(GOOD_TRAIN, [[[2]]])}, answers)
    with pytest.raises(ReverieError, match=r"solutions.json: task second needs a list of 1 output grid"):
        load_arc_tasks(challenges, solutions)


def test_a_bad_solution_grid_names_the_file_and_the_task(tmp_path: Path) -> None:
    challenges, solutions = write_pair(tmp_path, {"first": grid_task(GOOD_TRAIN, [[[1]]])}, {"first": [[[1, 11]]]})
    with pytest.raises(ReverieError, match=r"solutions.json: \[first\]\[0\]: .*colours 0 to 9"):
        load_arc_tasks(challenges, solutions)


def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "challenges.json").write_text("{not json")
    with pytest.raises(ReverieError, match="challenges.json: not a JSON file"):
        load_arc_tasks(tmp_path / "challenges.json")
    with pytest.raises(ReverieError, match="missing.json: not found"):
        load_arc_tasks(tmp_path / "missing.json")


@pytest.mark.parametrize("text, grid", [
    ("12\n34", [[1, 2], [3, 4]]),
    ("  120\n 034 \n\nThat is the answer.", [[1, 2, 0], [0, 3, 4]]),
    ("56\n78\nthe rule flips rows", [[5, 6], [7, 8]]),
    ("The output is\n12\n34", None),
    ("12\n3", None),  # ragged
    ("", None),
    ("1²\n34", None),  # a digit that is not 0-9 is no cell (and no crash)
])
def test_parse_grid_reads_the_grid_at_the_start_of_an_answer(text: str, grid: list | None) -> None:
    assert parse_grid(text) == grid


@pytest.mark.parametrize(("text", "credit"), [
    ("12\n34", (True, 1.0)),
    ("12\n30\n\nand more", (True, 0.75)),
    ("12\n34\n56", (False, 0.0)),  # one row too many: no partial credit
    ("The output is 1234.", (False, 0.0)),
])
def test_partial_credit_counts_cells_only_of_a_grid_of_the_right_shape(text: str, credit: tuple) -> None:
    assert partial_credit(text, [[1, 2], [3, 4]]) == credit


def test_loss_on_prompt_puts_labels_on_the_prompt_tokens(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from reverie.engines.prompts import user_prompt_ids
    from reverie.engines.training import IGNORE, tokenize

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt, completion = "Input:\n12\n34\nOutput:", "34\n12"
    head = len(user_prompt_ids(tokenizer, prompt))
    answer = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    outputs_only = tokenize(tokenizer, Example(prompt=prompt, completion=completion), 512)
    assert outputs_only.labels == [IGNORE] * head + answer

    all_tokens = tokenize(tokenizer, Example(prompt=prompt, completion=completion, loss_on_prompt=True), 512)
    assert all_tokens.input_ids == outputs_only.input_ids
    assert all_tokens.labels == [IGNORE] + all_tokens.input_ids[1:]  # every token but the first is a target
