"""Training: learns on the synthetic set, resumes exactly, stops on NaN, refuses bad input."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtlora_deploy.errors import ConfigError, DataError
from mtlora_deploy.trainer import losses as losses_module
from mtlora_deploy.trainer.api import resume_run
from mtlora_deploy.trainer.run_state import TrainingError
from tests.conftest import train_tiny_run


def _weights(run_dir):
    return load_file(str(Path(run_dir) / "checkpoints" / "last.safetensors"))


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    # 18 train images / batch 4 -> 4 steps per epoch; stop at 6 = in the middle of epoch 2
    train_tiny_run(tmp_path / "straight", max_steps=10, eval_every=100)
    train_tiny_run(tmp_path / "split", max_steps=10, eval_every=100, stop_after=6)
    assert json.loads((tmp_path / "split" / "checkpoints" / "last.json").read_text())["metadata"]["step"] == 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resume_run(tmp_path / "split")
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def test_run_folder_contents(tmp_path):
    train_tiny_run(tmp_path / "run", max_steps=4, eval_every=1)
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "params.json",
        "checkpoints/last.safetensors",
        "checkpoints/last.json",
        "checkpoints/best.safetensors",
        "checkpoints/last.state.pt",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tb").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train" in r and set(r["train"]) >= {"loss", "semseg", "sal"} for r in records)
    assert any("val" in r and "delta_m_vs_single_task_reference" in r for r in records)
    config = (run / "config.yaml").read_text()
    assert "lr_scale_factor: 0.0078125" in config  # 4 * 1 / 512, explicit in the resolved config
    params = json.loads((run / "params.json").read_text())
    assert params["trainable_params"] < params["total_params"]
    assert not (run / "data" / "cache").exists() and (run / "data" / "synthetic.json").is_file()


def test_nan_loss_stops_naming_the_task_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = losses_module.MultiTaskLoss.forward
    calls = {"n": 0}

    def poisoned(self, outputs, batch):
        total, per_task = original(self, outputs, batch)
        calls["n"] += 1
        if calls["n"] == 6:  # step 6, after the epoch-1 checkpoint at step 4
            per_task["sal"] = per_task["sal"] * float("nan")
        return total, per_task

    monkeypatch.setattr(losses_module.MultiTaskLoss, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"step 6: the sal loss is nan"):
        train_tiny_run(tmp_path / "run", max_steps=10, eval_every=100)
    info = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert info["metadata"]["step"] == 4
    assert all(torch.isfinite(v.float()).all() for v in _weights(tmp_path / "run").values())


def test_existing_run_folder_is_not_overwritten(tmp_path):
    train_tiny_run(tmp_path / "run", max_steps=1, eval_every=100)
    with pytest.raises(ConfigError, match="already holds a run; continue it with: mtlora train --resume"):
        train_tiny_run(tmp_path / "run", max_steps=1)


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="nope"):
        train_tiny_run(tmp_path / "run", data=str(tmp_path / "nope"), max_steps=1)


def test_resume_without_a_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="no config.yaml"):
        resume_run(tmp_path)
