"""One suites table: metrics.SUITES names every suite; the config's choices and the runner's builders follow it."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from reverie.config import SuiteName
from reverie.engines.suites.runner import SuiteRunner
from reverie.errors import ReverieError
from reverie.metrics import SUITES
from reverie.workspace import Workspace


def test_every_suite_has_a_builder_and_every_builder_a_suite() -> None:
    assert SuiteRunner.BUILDERS.keys() == SUITES.keys()


def test_config_suite_names_are_the_suites_table() -> None:
    assert get_args(SuiteName) == tuple(SUITES)


def test_unknown_suite_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    runner = SuiteRunner(Workspace.init(tmp_path))
    with pytest.raises(ReverieError, match="unknown suite 'robust': choose from " + ", ".join(SUITES)):
        runner.suite("robust")


@pytest.mark.parametrize("name", SUITES)
def test_each_name_builds_its_own_suite(tmp_path: Path, name: str) -> None:
    assert SuiteRunner(Workspace.init(tmp_path)).suite(name).name == name
