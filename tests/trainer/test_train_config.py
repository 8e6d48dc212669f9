import pytest

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.config import load_run_configs


def test_yaml_model_and_train_sections_with_flag_precedence(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  task_agnostic_rank: 8\ntrain:\n  batch_size: 16\n  epochs: 3\n")
    model, train = load_run_configs("mtlora-r32", str(path), {}, {"epochs": 5, "seed": None})
    assert model.task_agnostic_rank == 8 and train.batch_size == 16 and train.epochs == 5 and train.seed == 0
    assert train.scaled_lrs(2)["lr"] == pytest.approx(5e-4 * 16 * 2 / 512)


def test_bad_train_config_files(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*missing\.yaml does not exist"):
        load_run_configs(None, str(tmp_path / "missing.yaml"), {}, {})
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_run_configs(None, str(tmp_path / "bad.yaml"), {}, {})
