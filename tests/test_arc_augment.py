"""ARC grid augmentations: every one inverts exactly, the named transforms do what their names say, and the
inverses of size and repeat refuse grids their `apply` could not have made."""

from __future__ import annotations

import copy

import pytest

from reverie.data.arc_augment import (
    AUGMENTATIONS,
    FAMILIES,
    apply_to_pair,
    augmentations_for,
    grid_fits,
)

GRIDS = [
    [[7]],
    [[1, 2, 3], [4, 5, 6]],
    [[1], [2], [3]],
    [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [9, 8, 7, 6, 5], [4, 3, 2, 1, 0]],
    [[1, 1], [1, 2]],
]


@pytest.mark.parametrize("name", AUGMENTATIONS)
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{len(g)}x{len(g[0])}")
def test_invert_undoes_apply(name: str, grid: list[list[int]]) -> None:
    aug = AUGMENTATIONS[name]
    assert aug.invert(aug.apply(grid)) == grid


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_apply_and_invert_leave_their_input_alone(name: str) -> None:
    aug = AUGMENTATIONS[name]
    grid = copy.deepcopy(GRIDS[3])
    out = aug.apply(grid)
    assert grid == GRIDS[3]
    out[0][0] = 99  # a result that shared rows with its input would change the input here
    assert grid == GRIDS[3]
    made = aug.apply(GRIDS[3])
    kept = copy.deepcopy(made)
    restored = aug.invert(made)
    assert made == kept
    assert restored is not None
    restored[0][0] = 99
    assert made == kept


def test_rotate90_turns_clockwise() -> None:
    assert AUGMENTATIONS["rotate90"].apply([[1, 2], [3, 4]]) == [[3, 1], [4, 2]]
    assert AUGMENTATIONS["rotate270"].apply([[1, 2], [3, 4]]) == [[2, 4], [1, 3]]
    assert AUGMENTATIONS["rotate90"].apply([[1, 2, 3]]) == [[1], [2], [3]]


def test_flips_mirror_the_named_way() -> None:
    assert AUGMENTATIONS["flip_horizontal"].apply([[1, 2, 3], [4, 5, 6]]) == [[3, 2, 1], [6, 5, 4]]
    assert AUGMENTATIONS["flip_vertical"].apply([[1, 2, 3], [4, 5, 6]]) == [[4, 5, 6], [1, 2, 3]]


def test_transposes_swap_the_dimensions() -> None:
    assert AUGMENTATIONS["transpose"].apply([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]
    assert AUGMENTATIONS["anti_transpose"].apply([[1, 2, 3], [4, 5, 6]]) == [[6, 3], [5, 2], [4, 1]]


def test_size_and_repeat_grow_the_grid() -> None:
    grid = [[1, 2]]
    assert AUGMENTATIONS["upscale2"].apply(grid) == [[1, 1, 2, 2], [1, 1, 2, 2]]
    assert AUGMENTATIONS["upscale_height2"].apply(grid) == [[1, 2], [1, 2]]
    assert AUGMENTATIONS["upscale_width2"].apply(grid) == [[1, 1, 2, 2]]
    assert AUGMENTATIONS["tile1x2"].apply(grid) == [[1, 2, 1, 2]]
    assert AUGMENTATIONS["tile2x1"].apply(grid) == [[1, 2], [1, 2]]
    assert AUGMENTATIONS["tile2x2"].apply(grid) == [[1, 2, 1, 2], [1, 2, 1, 2]]
    assert AUGMENTATIONS["rotate90+upscale2"].apply(grid) == [[1, 1], [1, 1], [2, 2], [2, 2]]


@pytest.mark.parametrize(("name", "grid"), [
    ("upscale2", [[1, 1, 2], [1, 1, 2]]),  # odd width
    ("upscale2", [[1, 1], [1, 1], [2, 2]]),  # odd height
    ("upscale2", [[1, 1], [1, 2]]),  # a block that is not one colour
    ("upscale_height2", [[1, 2], [1, 3]]),  # rows that differ
    ("upscale_height2", [[1, 2]]),
    ("upscale_width2", [[1, 2]]),  # columns that differ
    ("upscale_width2", [[1, 1, 2]]),
    ("tile1x2", [[1, 2, 3]]),  # width does not divide
    ("tile1x2", [[1, 2, 1, 3]]),  # tiles that differ
    ("tile2x1", [[1], [2], [1]]),
    ("tile2x1", [[1, 2], [2, 1]]),
    ("tile2x2", [[1, 2, 1, 2], [1, 2, 1, 3]]),
    ("tile2x2", [[1, 1], [1, 1], [1, 1]]),
    ("rotate90+upscale2", [[1, 1], [1, 2]]),  # the size step fails, so the chain does
    ("transpose+upscale_width2", [[1, 1, 2]]),
])
def test_inverse_refuses_grids_apply_could_not_make(name: str, grid: list[list[int]]) -> None:
    assert AUGMENTATIONS[name].invert(grid) is None


def test_augmentations_for_keeps_family_order_once() -> None:
    chosen = augmentations_for(["size", "basic", "size"])
    assert [a.name for a in chosen] == [
        "rotate90", "rotate180", "rotate270", "flip_horizontal", "flip_vertical", "transpose", "anti_transpose",
        "upscale2", "upscale_height2", "upscale_width2"]
    assert augmentations_for([]) == []


def test_augmentations_covers_every_family_member() -> None:
    assert set(FAMILIES) == {"basic", "size", "chain", "repeat"}
    assert [a.name for a in augmentations_for(FAMILIES)] == list(AUGMENTATIONS)
    assert all(FAMILIES.values())


def test_unknown_family_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="'colour'.*basic, size, chain, repeat"):
        augmentations_for(["basic", "colour"])


def test_apply_to_pair_transforms_both_grids() -> None:
    source, target = [[1, 2], [3, 4]], [[5, 6, 7]]
    assert apply_to_pair(AUGMENTATIONS["rotate90"], source, target) == ([[3, 1], [4, 2]], [[5], [6], [7]])
    assert source == [[1, 2], [3, 4]] and target == [[5, 6, 7]]


def test_grid_fits_the_arc_size_limit() -> None:
    assert grid_fits([[0] * 30] * 30)
    assert not grid_fits([[0] * 31])
    assert not grid_fits([[0]] * 31)
    assert grid_fits([[0] * 4] * 4, max_side=4) and not grid_fits([[0] * 5], max_side=4)
    big = [[0] * 16] * 16
    assert not grid_fits(AUGMENTATIONS["upscale2"].apply(big))
