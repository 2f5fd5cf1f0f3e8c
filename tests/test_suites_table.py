"""One suites table: metrics.SUITES names every suite; the config's choices and the runner's builders follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from reverie.config import load_config
from reverie.engines.suites.runner import SuiteRunner
from reverie.errors import ConfigError, ReverieError
from reverie.metrics import SUITES
from reverie.workspace import Workspace


def test_every_suite_has_a_builder_and_every_builder_a_suite() -> None:
    assert SuiteRunner.BUILDERS.keys() == SUITES.keys()


def test_unknown_suite_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    runner = SuiteRunner(Workspace.init(tmp_path))
    with pytest.raises(ReverieError, match="unknown suite 'robust': choose from " + ", ".join(SUITES)):
        runner.suite("robust")


@pytest.mark.parametrize("name", SUITES)
def test_each_name_builds_its_own_suite(tmp_path: Path, name: str) -> None:
    assert SuiteRunner(Workspace.init(tmp_path)).suite(name).name == name


def test_an_unknown_suite_in_the_config_is_an_error_naming_every_suite(tmp_path: Path) -> None:
    Workspace.init(tmp_path)
    config = tmp_path / "reverie.yaml"
    config.write_text(config.read_text().replace("suites: [knowledge,", "suites: [knowlege,", 1))
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert "eval.suites.0 (line" in str(err.value) and all(f"'{name}'" in str(err.value) for name in SUITES)
