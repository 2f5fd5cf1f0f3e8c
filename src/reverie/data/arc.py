"""ARC tasks (the ARC-AGI JSON format the SEAL repository's few-shot experiment reads) and the text the model
sees them as: a task's demonstration pairs and a test input, each grid one line of digits per row."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from reverie.errors import ReverieError

Grid = list[list[int]]
MAX_SIDE = 30  # ARC's largest grid


def check_grid(grid: Grid) -> Grid:
    """A grid is 1-30 rows of equal length (1-30), each cell a colour 0-9."""
    if not 1 <= len(grid) <= MAX_SIDE:
        raise ValueError(f"a grid has 1 to {MAX_SIDE} rows, not {len(grid)}")
    width = len(grid[0])
    if not 1 <= width <= MAX_SIDE or any(len(row) != width for row in grid):
        raise ValueError(f"a grid's rows all have the same length, 1 to {MAX_SIDE}")
    if any(not 0 <= cell <= 9 for row in grid for cell in row):
        raise ValueError("a grid's cells are colours 0 to 9")
    return grid


class ArcPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: Grid
    output: Grid | None = None  # a test pair's output comes from the solutions file

    @field_validator("input", "output")
    @classmethod
    def _grid(cls, grid: Grid | None) -> Grid | None:
        return None if grid is None else check_grid(grid)


class ArcTask(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    train: list[ArcPair] = Field(min_length=2)  # leave-one-out needs two demonstrations
    test: list[ArcPair] = Field(min_length=1)

    def demonstrations(self) -> list[tuple[Grid, Grid]]:
        return [(p.input, p.output) for p in self.train if p.output is not None]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReverieError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReverieError(f"{path}: not a JSON file ({exc})") from None


def _problems(path: Path, exc: ValidationError) -> ReverieError:
    lines = [f"  [{']['.join(str(p) for p in e['loc'])}]: {e['msg']}" for e in exc.errors()[:10]]
    return ReverieError(f"{path}: {exc.error_count()} problem(s)\n" + "\n".join(lines))


def load_arc_tasks(challenges: Path, solutions: Path | None = None) -> list[ArcTask]:
    """Read `{task_id: {train: [{input, output}], test: [{input}]}}` and, when given, the solutions file
    `{task_id: [output grid per test input]}`; every problem names the file and the task's JSON path."""
    raw = _read_json(challenges)
    if not isinstance(raw, dict):
        raise ReverieError(f"{challenges}: expected an object of task id -> {{train, test}}, not {type(raw).__name__}")
    try:
        tasks = TypeAdapter(dict[str, ArcTask]).validate_python(
            {tid: {"id": tid, **body} if isinstance(body, dict) else body for tid, body in raw.items()})
    except ValidationError as exc:
        raise _problems(challenges, exc) from None
    if solutions is None:
        return list(tasks.values())
    answers = _read_json(solutions)
    if not isinstance(answers, dict):
        raise ReverieError(f"{solutions}: expected an object of task id -> [output grids]")
    for tid, task in tasks.items():
        outputs = answers.get(tid)
        if not isinstance(outputs, list) or len(outputs) != len(task.test):
            raise ReverieError(f"{solutions}: task {tid} needs a list of {len(task.test)} output grid(s), one per test "
                               "input")
        for i, grid in enumerate(outputs):
            try:
                task.test[i] = ArcPair(input=task.test[i].input, output=grid)
            except ValidationError as exc:
                raise ReverieError(f"{solutions}: [{tid}][{i}]: {exc.errors()[0]['msg']}") from None
    return list(tasks.values())


def grid_text(grid: Grid) -> str:
    """One line of digits per row: the cheapest form for a digit-per-token tokenizer."""
    return "\n".join("".join(str(cell) for cell in row) for row in grid)


def parse_grid(text: str) -> Grid | None:
    """The grid at the start of a model's answer (digit lines up to the first other line); None when that is no
    rectangular grid."""
    rows: Grid = []
    for line in text.strip().splitlines():
        line = line.strip()
        if not (line.isascii() and line.isdigit()):  # isdigit alone passes '²', which int() refuses
            break
        rows.append([int(c) for c in line])
    try:
        return check_grid(rows) if rows else None
    except ValueError:
        return None


def partial_credit(text: str, gold: Grid) -> tuple[bool, float]:
    """(right shape, share of cells right, 0 when the shape differs) of a predicted grid: what shows test-time
    training moving a prediction before it is exactly right."""
    grid = parse_grid(text)
    if grid is None or len(grid) != len(gold) or len(grid[0]) != len(gold[0]):
        return False, 0.0
    right = sum(a == b for row, gold_row in zip(grid, gold) for a, b in zip(row, gold_row))
    return True, right / (len(gold) * len(gold[0]))


def task_prompt(demonstrations: list[tuple[Grid, Grid]], query: Grid) -> str:
    """The few-shot prompt: every demonstration pair, then the query input whose output the model writes."""
    parts = ["Each example turns an input grid into an output grid by the same rule. Apply the rule to the last "
             "input."]
    for number, (source, target) in enumerate(demonstrations, 1):
        parts.append(f"Example {number}\nInput:\n{grid_text(source)}\nOutput:\n{grid_text(target)}")
    parts.append(f"Test\nInput:\n{grid_text(query)}\nOutput:")
    return "\n\n".join(parts)
