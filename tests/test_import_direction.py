"""Imports flow one way: CLI -> cycle -> phases -> engines -> registry/data/workspace; the lower layers need no torch."""

from __future__ import annotations

import ast
from pathlib import Path

import reverie

PACKAGE = Path(reverie.__file__).parent
HEAVY = ("torch", "transformers", "peft", "accelerate", "safetensors")


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules(*parts: str) -> list[Path]:
    base = PACKAGE.joinpath(*parts)
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def test_lower_layers_need_no_torch() -> None:
    lower = ("registry", "data", "config", "validation", "workspace", "artifacts", "stats", "metrics")
    for path in [p for part in lower for p in modules(part)]:
        heavy = {m for m in imports_of(path) if m.split(".")[0] in HEAVY}
        assert not heavy, f"{path.name} imports {heavy}"


def test_nothing_imports_the_entry_points() -> None:
    entry_points = ("reverie.cli", "reverie.cli_seal", "reverie.cli_data", "reverie.cli_eval", "reverie.cli_memory")
    for path in PACKAGE.rglob("*.py"):
        if path.name.startswith("cli") or path.name == "__main__.py":
            continue
        assert not set(entry_points) & imports_of(path), path


def test_engines_do_not_import_phases_or_cycle() -> None:
    for path in modules("engines"):
        upward = {m for m in imports_of(path) if m.startswith(("reverie.phases", "reverie.cycle", "reverie.generator"))}
        assert not upward, f"{path.name} imports {upward}"


def test_phases_do_not_import_each_other() -> None:
    for path in modules("phases"):
        others = {
            m for m in imports_of(path)
            if m.startswith("reverie.phases.") and m != "reverie.phases.base" or m.startswith("reverie.cycle")
        }
        assert not others, f"{path.name} imports {others}"
