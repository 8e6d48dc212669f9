"""Training the rows: one run folder per row under ``OUTPUT/runs``; a finished run is never trained again.

A row is finished when its last checkpoint reached the run's total steps. An interrupted run continues from its
last checkpoint (``resume_run``); a run folder trained with other settings is refused instead of mixed in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mtlora_deploy.compare.settings import CompareSettings, RowSpec
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.data_setup import SYNTHETIC_SIZE
from mtlora_deploy.utils.noise import NO_PRETRAINED_WEIGHTS, quiet_known_noise

LAST = Path("checkpoints") / "last"


def prepare_data(settings: CompareSettings, output_dir: Path) -> str:
    """The dataset folder every row trains on: ``settings.data`` as given, or one synthetic set in ``OUTPUT/data``."""
    if settings.data != "synthetic":
        if not Path(settings.data).is_dir():
            raise ConfigError(
                f"{settings.data} is not a folder (expected a PASCAL-MT root or 'synthetic')", field="data"
            )
        return str(settings.data)
    from mtlora_deploy.trainer.data import make_synthetic_dataset

    root = output_dir / "data"
    if not (root / "synthetic.json").is_file():
        make_synthetic_dataset(
            root, num_images=settings.synthetic_images, seed=settings.seed, image_size=SYNTHETIC_SIZE
        )
    return str(root)


def run_finished(run_dir: Path) -> bool:
    """True when the run's last checkpoint is at its total step count."""
    ckpt, config = run_dir / LAST.with_suffix(".json"), run_dir / "config.yaml"
    if not ckpt.is_file() or not config.is_file():
        return False
    step = json.loads(ckpt.read_text())["metadata"]["step"]
    return step >= yaml.safe_load(config.read_text())["resolved"]["total_steps"]


def check_same_settings(run_dir: Path, model: dict[str, Any], train: dict[str, Any]) -> None:
    """Refuse a run folder whose saved config differs from this comparison's (it would not be comparable)."""
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    for section, wanted in (("model", model), ("train", train)):
        for key, value in wanted.items():
            have = saved[section].get(key)
            if _normalised(have) != _normalised(value):
                raise ConfigError(
                    f"{run_dir}: was trained with {section} {key}={have!r}, this comparison asks for "
                    f"{value!r}; use another `output_dir` or delete {run_dir}"
                )


def _normalised(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def train_row(row: RowSpec, settings: CompareSettings, run_dir: Path, data_root: str) -> dict[str, Any] | None:
    """Train (or continue) the row's run; returns the final validation result, None when it was already done."""
    from mtlora_deploy.trainer.api import resume_run, start_run

    model, train = settings.model_config_for(row), settings.train_config(data_root)
    started = (run_dir / "config.yaml").is_file() and (run_dir / LAST.with_suffix(".json")).is_file()
    if started:
        check_same_settings(run_dir, model, train)
        if run_finished(run_dir):
            return None
    with quiet_known_noise(NO_PRETRAINED_WEIGHTS):  # rows train from random init when no weights are configured
        if started:
            return resume_run(run_dir)
        return start_run(row.preset, None, model, train, run_dir)
