"""Config: defaults validate, and every kind of bad value is reported with key, value, line and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reverie.config import load_config
from reverie.errors import ConfigError
from reverie.presets import preset_text

DEFAULT_YAML = preset_text("default")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reverie.yaml"
    path.write_text(text)
    return path


def test_default_yaml_is_valid(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DEFAULT_YAML))
    assert config.model.source == "embedded"
    assert config.model.trust_remote_code is False
    assert 0 < config.gate.capability["knowledge.accuracy"] < 1
    assert config.gate.alignment and set(config.gate.alignment) <= {"advbench.refusal", "advbench.jailbreak_refusal", "xstest.unsafe_refusal", "xstest.safe_compliance"}


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    text = DEFAULT_YAML.replace("compress:\n", "compress:\n  squash: true\n")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    line = text.splitlines().index("  squash: true") + 1
    assert f"compress.squash (line {line}): unknown key" in str(err.value)


def test_wrong_values_are_all_reported_together(tmp_path: Path) -> None:
    text = DEFAULT_YAML.replace("dtype: float32", "dtype: float16").replace("\n  samples: 4", "\n  samples: lots")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert "2 problem(s)" in message
    assert "model.dtype" in message and "'float16'" in message and "'float32' or 'bfloat16'" in message
    assert "dream.samples" in message and "'lots'" in message


def test_gate_thresholds_have_no_silent_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "model: {source: embedded}\n"))
    assert "gate: required key is missing" in str(err.value)


def test_cross_field_problem_is_reported(tmp_path: Path) -> None:
    text = DEFAULT_YAML.replace("knowledge.accuracy: 0.50", "knowledge.accuracy: 0").replace(
        "general.accuracy: 0.55", "general.accuracy: 0"
    )
    with pytest.raises(ConfigError, match="gate.capability: every floor is 0"):
        load_config(write(tmp_path, text))


def test_gate_metric_names_are_checked(tmp_path: Path) -> None:
    text = DEFAULT_YAML.replace("xstest.safe_compliance: 0.60", "advbench.refusals: 0.25\n    general.accuracy: 0.5")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "gate.alignment.advbench.refusals: unknown metric" in str(err.value)
    assert "gate.alignment.general.accuracy: not a safety metric" in str(err.value)
    text = DEFAULT_YAML.replace("suites: [knowledge, general, advbench, xstest]", "suites: [knowledge, general, xstest]")
    with pytest.raises(ConfigError, match="advbench.refusal need their suites in eval.suites"):
        load_config(write(tmp_path, text))


def test_replaced_gate_keys_say_what_replaced_them(tmp_path: Path) -> None:
    text = DEFAULT_YAML.replace("gate:  ", "gate:\n  knowledge_min_accuracy: 0.5\n  ", 1)
    with pytest.raises(ConfigError, match="replaced by gate.capability"):
        load_config(write(tmp_path, text))


def test_threshold_override_keeps_the_metric_name_whole(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DEFAULT_YAML), ["gate.alignment.advbench.refusal=0.4"])
    assert config.gate.alignment["advbench.refusal"] == 0.4


def test_override_is_validated_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, DEFAULT_YAML)
    assert load_config(path, ["learn.train.epochs=2"]).learn.train.epochs == 2
    with pytest.raises(ConfigError, match="learn.train.epochs"):
        load_config(path, ["learn.train.epochs=0"])


def test_cli_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "reverie", "init", str(tmp_path)], check=True, capture_output=True)
    config = tmp_path / "reverie.yaml"
    config.write_text(config.read_text().replace("epochs: 8", "epochs: -3"))
    result = subprocess.run(
        [sys.executable, "-m", "reverie", "cycle", "-w", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "learn.train.epochs" in result.stderr and "-3" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_override_with_broken_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, DEFAULT_YAML), ["learn.train.epochs=[3"])


def test_duplicate_keys_are_reported_with_both_lines_among_the_other_problems(tmp_path: Path) -> None:
    text = DEFAULT_YAML.replace("  min_tier: 1 ", "  min_tier: 2\n  min_tier: 1 ", 1).replace(
        "compress:\n", "compress:\n  strategies: []\n  squash: true\n", 1)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    message, tier = str(err.value), text.splitlines().index("  min_tier: 2") + 1
    listed = [n for n, line in enumerate(text.splitlines(), start=1) if line.startswith("  strategies: ")]
    assert "3 problem(s)" in message
    assert f"data.min_tier (lines {tier} and {tier + 1}): duplicate key" in message
    assert f"compress.strategies (lines {listed[0]} and {listed[1]}): duplicate key" in message
    assert "compress.squash" in message


def test_a_merge_key_override_is_not_a_duplicate(tmp_path: Path) -> None:
    text = DEFAULT_YAML.replace("  train: {learning_rate: 2.0e-3,", "  train: &train {learning_rate: 2.0e-3,", 1)
    dream_train = ("  train: {learning_rate: 5.0e-4, epochs: 3, block_size: 256, rows_per_step: 2, pack: true, seed: 0, "
                   "gradient_checkpointing: false}")
    text = text.replace(dream_train, "  train:\n    <<: *train\n    epochs: 3", 1)
    config = load_config(write(tmp_path, text))
    assert config.dream.train.epochs == 3 and config.dream.train.learning_rate == 2e-3


def test_bad_overrides_are_blamed_on_their_set_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, DEFAULT_YAML), ["learn.train.epochs=abc", "learn.nope=1", "foo"])
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'reverie.yaml'} with the --set values: 3 problem(s)")
    assert "learn.train.epochs (--set learn.train.epochs=abc): got 'abc'; Input should be a valid integer" in message
    assert "learn.nope (--set learn.nope=1): unknown key (allowed: mode, pretrain_tokens, pretrain_buckets, lora, train, processes," in message
    assert "--set foo: expected KEY=VALUE" in message
    assert "line" not in message


def test_cli_names_the_set_argument_without_traceback(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "reverie", "init", str(tmp_path)], check=True, capture_output=True)
    result = subprocess.run([sys.executable, "-m", "reverie", "cycle", "-w", str(tmp_path), "--set",
                             "learn.train.epochs=abc"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert "learn.train.epochs (--set learn.train.epochs=abc): got 'abc'" in result.stderr


@pytest.mark.parametrize("command", ["status", "history"])
def test_read_only_commands_refuse_an_invalid_config(tmp_path: Path, command: str) -> None:
    subprocess.run([sys.executable, "-m", "reverie", "init", str(tmp_path)], check=True, capture_output=True)
    config = tmp_path / "reverie.yaml"
    config.write_text(config.read_text().replace("epochs: 8", "epochs: -3").replace("dtype: float32", "dtype: fp8"))
    result = subprocess.run([sys.executable, "-m", "reverie", command, "-w", str(tmp_path)], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert "2 problem(s)" in result.stderr and "learn.train.epochs" in result.stderr and "model.dtype" in result.stderr
