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


def test_unknown_yaml_keys_are_errors_naming_the_nearest_field(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  task_agnostic_rnk: 3\n")
    with pytest.raises(ConfigError, match="key .task_agnostic_rnk.; did you mean .task_agnostic_rank."):
        resolve_config(None, str(tmp_path / "c.yaml"))
    with pytest.raises(
        ConfigError, match="^`overrides`: unknown model config key 'imagesize'; did you mean 'image_size'"
    ):
        resolve_config(None, None, {"imagesize": 64})


def test_unknown_keys_in_a_checkpoint_written_by_a_newer_toolkit_only_warn():
    with pytest.warns(UserWarning, match="not_a_field"):
        ModelConfig.from_dict({"not_a_field": 3, "backbone": "swin_test_tiny", "image_size": 64})


@pytest.mark.parametrize(
    "value, match",
    [
        ("sixty-four", r"^image_size: got 'sixty-four' \(str\), expected an integer$"),
        (64.0, r"^image_size: got 64.0 \(float\), expected an integer$"),
        (True, r"^image_size: got True \(bool\), expected an integer$"),
    ],
)
def test_wrongly_typed_fields_name_the_field_and_type(value, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_dict({"backbone": "swin_test_tiny", "image_size": value})


def test_image_size_follows_the_export_window_rule():
    with pytest.raises(ConfigError, match=r"^`image_size`: got 96; the token grids .* use a multiple of 64"):
        ModelConfig.from_dict({"backbone": "swin_test_tiny", "image_size": 96})
    assert ModelConfig.from_dict({"backbone": "swin_test_tiny", "image_size": 128}).image_size == 128


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"tasks": ("semseg", "depth")}, "tasks: got 'depth'"),
        ({"adapter": "qlora"}, "adapter: got 'qlora'"),
        ({"image_size": 450}, "`image_size`: got 450; .* use a multiple of 224"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"task_agnostic_rank": 0}, "task_agnostic_rank"),
        ({"tasks": ()}, "at least one task"),
    ],
)
def test_bad_configs_give_clear_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config("mtlora-r16", overrides=overrides)


def test_bad_preset_and_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="`preset`: got 'nope'"):
        resolve_config("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(None, str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(None, str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="exactly one task"):
        resolve_config("single-task")
