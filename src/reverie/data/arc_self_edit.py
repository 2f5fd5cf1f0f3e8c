"""ARC self-edits: the training configuration a model writes for itself after reading a task's demonstrations
(which augmentation families to train on, loss on all tokens or on the outputs only, learning rate, epochs),
as in the SEAL repository's few-shot experiment. A self-edit that does not parse is rejected with a reason;
the caller records it and scores it zero."""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reverie.data.arc import Grid, grid_text

FAMILY_FLAGS = {  # the self-edit's key -> the augmentation family (data/arc_augment.py) it switches on
    "use_basic_augmentations": "basic",
    "use_size_augmentations": "size",
    "use_chain_augmentations": "chain",
    "use_repeat_augmentations": "repeat",
}
SEPARATORS = (", ", ": ")  # of the canonical text


class InvalidSelfEdit(ValueError):
    """A self-edit that is no usable configuration; the message is the reason recorded for it."""


class DataGeneration(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    use_basic_augmentations: bool = False
    use_size_augmentations: bool = False
    use_chain_augmentations: bool = False
    use_repeat_augmentations: bool = False


class TrainingChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: Literal["train_using_all_tokens", "train_using_output_tokens"]
    learning_rate: float = Field(ge=1e-6, le=1e-2)
    num_train_epochs: int = Field(ge=1, le=10, strict=True)


class ArcSelfEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_generation: DataGeneration
    training: TrainingChoice

    def families(self) -> list[str]:
        flags = self.data_generation.model_dump()
        return [family for key, family in FAMILY_FLAGS.items() if flags[key]]

    @property
    def loss_on_all_tokens(self) -> bool:
        return self.training.strategy == "train_using_all_tokens"

    def text(self) -> str:
        """The canonical one-line JSON: what ReST-EM fine-tunes the generator to write."""
        return json.dumps(self.model_dump(), separators=SEPARATORS)


EXAMPLE = ArcSelfEdit(
    data_generation=DataGeneration(use_basic_augmentations=True),
    training=TrainingChoice(strategy="train_using_output_tokens", learning_rate=1e-3, num_train_epochs=2),
)


SLOT_CHOICES: dict[str, tuple[bool | str | float | int, ...]] = {  # what constrained decoding may choose from
    **{key: (True, False) for key in FAMILY_FLAGS},
    "strategy": ("train_using_all_tokens", "train_using_output_tokens"),
    "learning_rate": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    "num_train_epochs": (1, 2, 3, 4, 5),
}
_SLOT = re.compile(r'"@@(\w+)@@"')


def template_pieces() -> list[tuple[str, str | None]]:
    """The canonical text of a self-edit as (literal, slot) pieces: each literal is followed by the value of its
    slot (None after the last). A slot's value is written as a space and its JSON, so that a literal ends at the
    colon and the value's tokens are the same alone as in the whole text."""
    skeleton = json.dumps({"data_generation": {k: f"@@{k}@@" for k in DataGeneration.model_fields},
                           "training": {k: f"@@{k}@@" for k in TrainingChoice.model_fields}}, separators=SEPARATORS)
    parts = _SLOT.split(skeleton)  # literal, slot, literal, slot, ..., literal
    pieces = [(parts[i].rstrip(" "), parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
    return pieces + [(parts[-1], None)]


def slot_text(value: bool | str | float | int) -> str:
    return " " + json.dumps(value)


def _first_object(text: str) -> str:
    """The first balanced {...} in `text` (models often wrap the JSON in prose or a code fence)."""
    start = text.find("{")
    if start < 0:
        raise InvalidSelfEdit("no JSON object in the answer")
    depth = 0
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[start : end + 1]
    raise InvalidSelfEdit("the JSON object is not closed")


def parse_arc_self_edit(text: str) -> ArcSelfEdit:
    """The configuration in a model's answer; raises InvalidSelfEdit saying what is wrong."""
    try:
        raw = json.loads(_first_object(text))
    except json.JSONDecodeError as exc:
        raise InvalidSelfEdit(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    try:
        return ArcSelfEdit.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the object"
        raise InvalidSelfEdit(f"{where}: {first['msg']}") from None


def arc_self_edit_prompt(demonstrations: list[tuple[Grid, Grid]]) -> str:
    """Ask for a training configuration for the task shown by `demonstrations` (the model sees no test input)."""
    shown = "\n\n".join(f"Example {n}\nInput:\n{grid_text(a)}\nOutput:\n{grid_text(b)}"
                        for n, (a, b) in enumerate(demonstrations, 1))
    return (
        "You will learn the rule of the task below by fine-tuning on its examples. Choose how: which augmented "
        "copies of the examples to train on (basic: rotations, flips and transpositions; size: upscaled grids; "
        "chain: a rotation or flip combined with upscaling; repeat: tiled grids), whether to train on all tokens "
        "or on the output tokens only, the learning rate and the number of epochs. Answer with one JSON object "
        f"of this form:\n{EXAMPLE.text()}\n\n{shown}"
    )
