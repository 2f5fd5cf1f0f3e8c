"""Named, invertible ARC grid augmentations for test-time training, in the four families a SEAL few-shot
self-edit can switch on (basic, size, chain, repeat; the SEAL repository's marc-style augmenters). Training on a
transformed task multiplies the few demonstrations; the inverse maps a prediction made on a transformed query back
to the original task, or says it could not have come from `apply` so the vote can drop it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from reverie.data.arc import MAX_SIDE, Grid


@dataclass(frozen=True)
class Augmentation:
    """A grid transform and its inverse; `invert` returns None for a grid `apply` could not have produced."""

    name: str
    apply: Callable[[Grid], Grid]
    invert: Callable[[Grid], Grid | None]


def _rotate90(grid: Grid) -> Grid:  # clockwise
    return [list(row) for row in zip(*grid[::-1])]


def _rotate180(grid: Grid) -> Grid:
    return [row[::-1] for row in grid[::-1]]


def _rotate270(grid: Grid) -> Grid:
    return [list(row) for row in zip(*grid)][::-1]


def _flip_horizontal(grid: Grid) -> Grid:
    return [row[::-1] for row in grid]


def _flip_vertical(grid: Grid) -> Grid:
    return [list(row) for row in grid[::-1]]


def _transpose(grid: Grid) -> Grid:
    return [list(row) for row in zip(*grid)]


def _anti_transpose(grid: Grid) -> Grid:
    return _rotate180(_transpose(grid))


BASIC = (
    Augmentation("rotate90", _rotate90, _rotate270),
    Augmentation("rotate180", _rotate180, _rotate180),
    Augmentation("rotate270", _rotate270, _rotate90),
    Augmentation("flip_horizontal", _flip_horizontal, _flip_horizontal),
    Augmentation("flip_vertical", _flip_vertical, _flip_vertical),
    Augmentation("transpose", _transpose, _transpose),
    Augmentation("anti_transpose", _anti_transpose, _anti_transpose),
)


def _upscale(name: str, rows: int, cols: int) -> Augmentation:
    """Each cell becomes a rows x cols block; the inverse keeps one cell per block if every block is uniform."""

    def apply(grid: Grid) -> Grid:
        return [[cell for cell in row for _ in range(cols)] for row in grid for _ in range(rows)]

    def invert(grid: Grid) -> Grid | None:
        if len(grid) % rows or len(grid[0]) % cols:
            return None
        small = [row[::cols] for row in grid[::rows]]
        return small if apply(small) == grid else None

    return Augmentation(name, apply, invert)


SIZE = (_upscale("upscale2", 2, 2), _upscale("upscale_height2", 2, 1), _upscale("upscale_width2", 1, 2))


def _chain(first: Augmentation, then: Augmentation) -> Augmentation:
    """`first`, then `then`; the inverse undoes `then` first and fails if either step's inverse does."""

    def invert(grid: Grid) -> Grid | None:
        undone = then.invert(grid)
        return None if undone is None else first.invert(undone)

    return Augmentation(f"{first.name}+{then.name}", lambda grid: then.apply(first.apply(grid)), invert)


_STEP = {a.name: a for a in BASIC + SIZE}
CHAIN = (
    _chain(_STEP["rotate90"], _STEP["upscale2"]),
    _chain(_STEP["rotate270"], _STEP["upscale2"]),
    _chain(_STEP["flip_horizontal"], _STEP["upscale2"]),
    _chain(_STEP["transpose"], _STEP["upscale_width2"]),
)


def _tile(rows: int, cols: int) -> Augmentation:
    """The grid repeated rows x cols times; the inverse is the top-left tile if every tile equals it."""

    def apply(grid: Grid) -> Grid:
        return [row * cols for _ in range(rows) for row in grid]

    def invert(grid: Grid) -> Grid | None:
        if len(grid) % rows or len(grid[0]) % cols:
            return None
        tile = [row[: len(grid[0]) // cols] for row in grid[: len(grid) // rows]]
        return tile if apply(tile) == grid else None

    return Augmentation(f"tile{rows}x{cols}", apply, invert)


REPEAT = (_tile(1, 2), _tile(2, 1), _tile(2, 2))

FAMILIES: dict[str, tuple[Augmentation, ...]] = {"basic": BASIC, "size": SIZE, "chain": CHAIN, "repeat": REPEAT}
AUGMENTATIONS: dict[str, Augmentation] = {a.name: a for family in FAMILIES.values() for a in family}


def augmentations_for(families: Iterable[str]) -> list[Augmentation]:
    """The augmentations of the chosen families, in FAMILIES order whatever order they are named in, each once."""
    chosen = set(families)
    unknown = sorted(chosen - FAMILIES.keys())
    if unknown:
        raise ValueError(f"unknown augmentation family {', '.join(map(repr, unknown))}; allowed: "
                         f"{', '.join(FAMILIES)}")
    return [a for family, members in FAMILIES.items() if family in chosen for a in members]


def apply_to_pair(aug: Augmentation, input_grid: Grid, output_grid: Grid) -> tuple[Grid, Grid]:
    """A demonstration pair with both grids transformed the same way, so the rule still maps one to the other."""
    return aug.apply(input_grid), aug.apply(output_grid)


def grid_fits(grid: Grid, max_side: int = MAX_SIDE) -> bool:
    """Whether an (upscaled or tiled) grid is still an ARC-sized grid; callers skip augmented pairs that are not."""
    return 1 <= len(grid) <= max_side and 1 <= len(grid[0]) <= max_side
