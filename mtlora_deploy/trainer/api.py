"""Library entry points behind ``mtlora train``: start a run, or resume one from its folder alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.trainer.checkpoint_set import has_checkpoint
from mtlora_deploy.trainer.config import TrainConfig, load_run_configs, run_origin
from mtlora_deploy.trainer.loop import Trainer


def start_run(
    preset: str | None,
    config_path: str | None,
    model_overrides: dict[str, Any],
    train_overrides: dict[str, Any],
    run_dir: str | Path | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Resolve configs, refuse to overwrite a finished run folder, train."""
    model_config, train_config = load_run_configs(preset, config_path, model_overrides, train_overrides)
    run_dir = Path(run_dir or Path("runs") / (preset or "custom"))
    _refuse_run_dir_in_dataset(run_dir, train_config.data)
    if has_checkpoint(run_dir):
        raise ConfigError(
            f"`run_dir` {run_dir} already holds a run; continue it with: mtlora train --resume {run_dir}, or pick "
            "another folder",
            field="run_dir",
        )
    origin = run_origin(preset, config_path, model_overrides)
    return Trainer(model_config, train_config, run_dir, stop_after=stop_after, origin=origin).fit()


def _refuse_run_dir_in_dataset(run_dir: Path, data: str) -> None:
    if data == "synthetic":
        return
    root, target = Path(data).resolve(), run_dir.resolve()
    if target == root or root in target.parents:
        raise ConfigError(
            f"`run_dir` {run_dir} is inside the dataset folder {data}; write runs somewhere else", field="run_dir"
        )


def resume_run(
    run_dir: Path, stop_after: int | None = None, max_steps: int | None = None, device: str | None = None
) -> dict[str, Any]:
    """Continue a run from ``RUN/config.yaml`` and ``RUN/checkpoints/last.*`` exactly where it stopped."""
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"resuming {run_dir}: no config.yaml there; is it a run folder?")
    saved = yaml.safe_load(config_file.read_text())
    model_config = ModelConfig.from_dict(saved["model"], source=str(config_file))
    train_data = dict(saved["train"])
    if max_steps is not None:
        train_data["max_steps"] = max_steps
    if device is not None:
        train_data["device"] = device
    train_config = TrainConfig.from_dict(train_data, source=str(config_file))
    trainer = Trainer(
        model_config, train_config, run_dir, resume=True, stop_after=stop_after, origin=saved.get("origin")
    )
    return trainer.fit()
