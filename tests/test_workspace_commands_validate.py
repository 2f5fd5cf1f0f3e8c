"""Every command that opens a workspace checks its reverie.yaml first, so that a broken config is reported in
full before a command reads the registry or does any work."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reverie.cli import app
from reverie.errors import ConfigError
from reverie.workspace import Workspace

from conftest import PACKAGE


def workspace_opens(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "Workspace"]


def test_every_workspace_open_in_the_commands_and_the_server_validates() -> None:
    paths = [*PACKAGE.glob("cli*.py"), *PACKAGE.joinpath("serving").rglob("*.py")]
    unchecked = [f"{path.name}:{call.lineno}" for path in paths for call in workspace_opens(path)
                 if not any(k.arg == "validate" and getattr(k.value, "value", None) is True for k in call.keywords)]
    assert not unchecked, f"Workspace.open without validate=True: {', '.join(unchecked)}"


@pytest.mark.parametrize("command", [["status"], ["history"]])
def test_read_only_commands_list_every_problem_of_the_config(tmp_path: Path, command: list[str]) -> None:
    Workspace.init(tmp_path)
    config = tmp_path / "reverie.yaml"
    config.write_text(config.read_text().replace("compress:\n", "compress:\n  squash: true\n", 1)
                      .replace("dtype: float32", "dtype: fp8", 1))
    result = CliRunner().invoke(app, [*command, "-w", str(tmp_path)])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "2 problem(s)" in message
    assert "compress.squash (line" in message and "unknown key (allowed: strategies, max_logit_diff, merge_batch, quantize," in message
    assert "model.dtype (line" in message and "'fp8'" in message
