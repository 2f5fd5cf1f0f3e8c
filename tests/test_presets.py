"""Presets: every shipped preset validates, default.yaml states every field at its declared default, the demo
preset is the default config, and `reverie init --preset` writes only a preset it knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from reverie.cli import app
from reverie.config import THRESHOLD_SECTIONS, ReverieConfig, load_config
from reverie.errors import ReverieError
from reverie.presets import preset_names, preset_text

from conftest import HEAVY, PACKAGE, imports_of

# Keys of default.yaml whose value is an example, not the field's default, and why.
NOT_DEFAULTS = {
    **{f"gate.{section}": "release thresholds are the workspace's own decision, not defaults"
       for section in THRESHOLD_SECTIONS},
    "data.sources": "example sources; by default there are none, so `reverie data ingest` accepts nothing",
}


def leaves(model: type[BaseModel], tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every value in a config tree, down through the sections (not into dict values)."""
    for key, value in tree.items():
        annotation = model.model_fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaves(annotation, value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every dotted key that the config tree declares."""
    for key, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from fields(field.annotation, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def default_preset() -> dict[str, Any]:
    return yaml.safe_load(preset_text("default"))


def test_the_presets_are_the_ones_documented() -> None:
    assert preset_names() == ["default", "demo", "tiny"]


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates(tmp_path: Path, name: str) -> None:
    path = tmp_path / "reverie.yaml"
    path.write_text(preset_text(name))
    assert load_config(path).gate.capability


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_says_what_it_is_for(name: str) -> None:
    assert preset_text(name).startswith("# reverie ")


def test_default_preset_values_are_the_field_defaults() -> None:
    preset = default_preset()
    required = {section: preset["gate"][section] for section in ("capability", "alignment")}
    defaults = ReverieConfig.model_validate({"gate": required}).model_dump()
    wrong = []
    for key, value in leaves(ReverieConfig, preset):
        if key in NOT_DEFAULTS:
            continue
        default = defaults
        for part in key.split("."):
            default = default[part]
        if value != default:
            wrong.append(f"{key}: default.yaml says {value!r}, the field default is {default!r}")
    assert not wrong, "\n".join(wrong)


def test_every_field_has_a_line_in_the_default_preset() -> None:
    stated = {key for key, _ in leaves(ReverieConfig, default_preset())}
    missing = [key for key in fields(ReverieConfig) if key not in stated]
    assert not missing, f"no line in src/reverie/presets/default.yaml for {', '.join(missing)}"


def test_not_defaults_names_only_keys_of_the_default_preset() -> None:
    assert set(NOT_DEFAULTS) <= {key for key, _ in leaves(ReverieConfig, default_preset())}


def test_demo_preset_is_the_default_config() -> None:
    demo = ReverieConfig.model_validate(yaml.safe_load(preset_text("demo")))
    assert demo.fingerprint() == ReverieConfig.model_validate(default_preset()).fingerprint()


def test_unknown_or_path_preset_is_refused_naming_the_known_ones() -> None:
    for name in ("nope", "../default", "default.yaml", "/etc/passwd", ""):
        with pytest.raises(ReverieError, match=r"unknown \(choose from default, demo, tiny\)"):
            preset_text(name)


def test_init_writes_the_chosen_preset(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path / "ws"), "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ws" / "reverie.yaml").read_text() == preset_text("tiny")
    result = CliRunner().invoke(app, ["init", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plain" / "reverie.yaml").read_text() == preset_text("default")


def test_init_keeps_an_existing_config_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "reverie.yaml").write_text("# mine\n")
    result = CliRunner().invoke(app, ["init", str(tmp_path), "--preset", "demo"])
    assert result.exit_code == 0 and "kept the existing" in result.output
    assert (tmp_path / "reverie.yaml").read_text() == "# mine\n"


def test_init_with_an_unknown_preset_creates_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path / "ws"), "--preset", "../../secrets"])
    assert result.exit_code != 0
    assert "preset '../../secrets': unknown (choose from default, demo, tiny)" in str(result.exception)
    assert not (tmp_path / "ws").exists()


def test_preset_and_strategy_name_modules_need_no_torch() -> None:
    for path in [*PACKAGE.joinpath("presets").rglob("*.py"), PACKAGE / "strategy_names.py"]:
        assert not {m for m in imports_of(path) if m.split(".")[0] in HEAVY}, path
