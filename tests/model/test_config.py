import pytest

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.config import ModelConfig, load_yaml, save_yaml
from mtlora_deploy.model.presets import PRESETS, resolve_config


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_resolves_and_round_trips_through_yaml(name, tmp_path):
    tasks = ("sal",) if name == "single-task" else ("semseg", "sal")
    config = resolve_config(name, overrides={"tasks": tasks})
    save_yaml(config, tmp_path / "c.yaml")
    assert ModelConfig.from_dict(load_yaml(tmp_path / "c.yaml")) == config


def test_precedence_default_preset_yaml_override(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  task_agnostic_rank: 8\n  lora_scale: 2.0\n")
    config = resolve_config("mtlora-r32", str(tmp_path / "c.yaml"), {"lora_scale": 1.0})
    assert config.task_agnostic_rank == 8  # YAML beats preset
    assert config.lora_scale == 1.0  # flag beats YAML
    assert config.task_specific_rank == 4  # preset
    assert config.drop_path_rate == 0.2  # default


def test_presets_are_the_documented_settings():
    assert resolve_config("mtlora-plus-r64").lora_on_reductions
    assert resolve_config("mtlora-plus-r64").task_specific_rank == 4
    assert resolve_config("lora").adapter == "lora"
    assert resolve_config("mtlora-r16").lora_scale == 4.0


def test_unknown_yaml_keys_warn(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  not_a_field: 3\n")
    with pytest.warns(UserWarning, match="not_a_field"):
        resolve_config(None, str(tmp_path / "c.yaml"))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"tasks": ("semseg", "depth")}, "tasks: got 'depth'"),
        ({"adapter": "qlora"}, "adapter: got 'qlora'"),
        ({"image_size": 450}, "image_size: got 450, expected a positive multiple of 32"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"task_agnostic_rank": 0}, "task_agnostic_rank"),
        ({"tasks": ()}, "at least one task"),
    ],
)
def test_bad_configs_give_clear_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config("mtlora-r16", overrides=overrides)


def test_bad_preset_and_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="--preset: got 'nope'"):
        resolve_config("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(None, str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(None, str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="exactly one task"):
        resolve_config("single-task")
