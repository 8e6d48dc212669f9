"""Whole reference checkpoints (yacs config pickle included) read without yacs; export-reference round-trips."""

import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from mtlora_deploy.cli.main import cli
from mtlora_deploy.errors import ConfigError, WeightsError
from mtlora_deploy.model import build_model, resolve_config
from mtlora_deploy.model.checkpoint import save_checkpoint
from mtlora_deploy.model.reference.checkpoint import import_reference
from mtlora_deploy.model.reference.export import (
    export_reference_checkpoint,
    reference_model_section,
    reference_state_dict,
)
from mtlora_deploy.model.state_io import load_torch_file
from tests.conftest import randomize_lora, tiny_model

REFERENCE_KEYS = Path(__file__).parents[1] / "data" / "reference_keys.tsv"
# TA rank 8, TS rank 2, shared scale 2, task scale 3, tasks in a non-default order: detection must find all of it
SOURCE = dict(
    task_agnostic_rank=8,
    task_specific_rank=2,
    lora_scale=2.0,
    task_specific_scale=3.0,
    tasks=("sal", "semseg"),
    head_channels=96,
)


def _fake_yacs():
    """A module with yacs' CfgNode shape (dict subclass, flags incl. a set in its __dict__), only to pickle one."""
    module = types.ModuleType("yacs.config")

    class CfgNode(dict):
        def __init__(self, init_dict=None, new_allowed=False):
            super().__init__()
            for key, value in (init_dict or {}).items():
                self[key] = CfgNode(value) if isinstance(value, dict) else value
            self.__dict__.update(
                {
                    "__immutable__": False,
                    "__deprecated_keys__": set(),
                    "__renamed_keys__": {},
                    "__new_allowed__": new_allowed,
                }
            )

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    module.CfgNode = CfgNode
    return module


def _reference_config():
    """What the reference's get_config() holds for SOURCE (normalised per-stage lists, as update_config leaves them)."""
    stages = 4
    return {
        "DATA": {"IMG_SIZE": 64, "BATCH_SIZE": 32, "DBNAME": "PASCALContext"},
        "MODEL": {
            "TYPE": "swin",
            "NAME": "mtlora_tiny",
            "DROP_PATH_RATE": 0.2,
            "SWIN": {
                "PATCH_SIZE": 4,
                "EMBED_DIM": 24,
                "DEPTHS": [1, 1, 2, 1],
                "NUM_HEADS": [1, 2, 3, 6],
                "WINDOW_SIZE": 2,
                "APE": False,
                "QK_SCALE": None,
            },
            "DECODER_HEAD": {"semseg": "hrnet", "sal": "hrnet", "normals": "hrnet"},
            "DECODER_CHANNELS": [4, 4, 8, 8],
            "MTLORA": {
                "ENABLED": True,
                "R": [8] * stages,
                "SHARED_SCALE": [2.0] * stages,
                "TASK_SCALE": [9.0] * stages,
                "DROPOUT": [0.05] * stages,
                "TRAINABLE_SCALE_SHARED": False,
                "SHARED_MODE": "matrix",
                "DOWNSAMPLER_ENABLED": False,
                "R_PER_TASK": {"sal": [2], "semseg": [2], "shared": [8]},
                "SCALE_PER_TASK": {"sal": [3.0] * stages, "semseg": [3.0] * stages},
            },
        },
        "TRAIN": {"OPTIMIZER": {"BETAS": (0.9, 0.999)}},
        "TASKS": ["sal", "semseg"],
        "TASKS_CONFIG": {"ALL_TASKS": {"NUM_OUTPUT": {"sal": 1, "semseg": 21}}},
    }


def _write_reference_pth(path, model, config=True):
    """A file laid out like the reference utils.save_checkpoint output, config as a pickled yacs CfgNode."""
    yacs = _fake_yacs()
    sys.modules["yacs"], sys.modules["yacs.config"] = types.ModuleType("yacs"), yacs
    try:
        params = [p for p in model.parameters() if p.requires_grad][:3]
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        sum(p.sum() for p in params).backward()
        optimizer.step()
        checkpoint = {
            "model": reference_state_dict(model),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": {"t_initial": 300, "base_values": [5e-4], "warmup_t": 20, "noise_range_t": None},
            "max_accuracy": 0.0,
            "scaler": {"scale": 65536.0, "_growth_tracker": 3},
            "epoch": 41,
        }
        if config:
            checkpoint["config"] = yacs.CfgNode(_reference_config())
        torch.save(checkpoint, path)
    finally:
        del sys.modules["yacs"], sys.modules["yacs.config"]


def _outputs(model, images):
    with torch.no_grad():
        return model.eval()(images)


def test_reference_checkpoint_with_yacs_config_imports_without_options(tmp_path, images):
    source = tiny_model("mtlora-r16", **SOURCE)
    randomize_lora(source)
    _write_reference_pth(tmp_path / "ckpt_epoch_41.pth", source)
    assert "yacs" not in sys.modules
    model, unused, detected = import_reference(tmp_path / "ckpt_epoch_41.pth", {})
    assert unused == []
    assert detected["tasks"][0] == ("sal", "semseg") and detected["backbone"][0] == "swin_test_tiny"
    config = model.config
    assert (config.task_agnostic_rank, config.task_specific_rank) == (8, 2)
    assert (config.lora_scale, config.task_specific_scale, config.image_size) == (2.0, 3.0, 64)
    for task, value in _outputs(source, images).items():
        torch.testing.assert_close(_outputs(model, images)[task], value, rtol=0, atol=0)


def test_stored_config_reads_as_plain_dicts(tmp_path):
    _write_reference_pth(tmp_path / "ref.pth", tiny_model("mtlora-r16", **SOURCE))
    raw = load_torch_file(tmp_path / "ref.pth")
    assert type(raw["config"]) is dict and type(raw["config"]["MODEL"]["MTLORA"]) is dict
    assert raw["config"]["TRAIN"]["OPTIMIZER"]["BETAS"] == (0.9, 0.999) and raw["epoch"] == 41


def test_other_pickled_globals_are_refused_by_name(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return os.system, ("echo pwned",)

    torch.save({"model": {}, "config": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match=r"evil\.pth: refusing to unpickle (os|posix)\.system"):
        load_torch_file(tmp_path / "evil.pth")
    torch.save({"model": {"w": torch.zeros(1)}, "extra": types.SimpleNamespace(a=1)}, tmp_path / "ns.pth")
    with pytest.raises(WeightsError, match=r"refusing to unpickle types\.SimpleNamespace"):
        load_torch_file(tmp_path / "ns.pth")


def test_given_options_must_agree_with_the_stored_config(tmp_path):
    _write_reference_pth(tmp_path / "ref.pth", tiny_model("mtlora-r16", **SOURCE))
    with pytest.raises(
        ConfigError,
        match=r"--preset mtlora-r16 gives task_agnostic_rank=16 but .*ref\.pth was "
        r"trained with task_agnostic_rank=8 \(MODEL\.MTLORA\.R_PER_TASK\.shared\)",
    ):
        import_reference(tmp_path / "ref.pth", {"task_agnostic_rank": (16, "--preset mtlora-r16")})
    with pytest.raises(ConfigError, match=r"--tasks gives tasks=semseg,sal but .* tasks=sal,semseg \(TASKS\)"):
        import_reference(tmp_path / "ref.pth", {"tasks": (("semseg", "sal"), "--tasks")})
    model, _, _ = import_reference(tmp_path / "ref.pth", {"task_agnostic_rank": (8, "--set task_agnostic_rank")})
    assert model.config.task_agnostic_rank == 8


def test_bare_state_dict_needs_options(tmp_path):
    source = tiny_model("mtlora-r16", **SOURCE)
    _write_reference_pth(tmp_path / "bare.pth", source, config=False)
    with pytest.raises(ConfigError, match="holds no reference config .* pass `preset` and `tasks`"):
        import_reference(tmp_path / "bare.pth", {})
    given = {
        k: (v, f"--set {k}")
        for k, v in {**SOURCE, "backbone": "swin_test_tiny", "image_size": 64, "decoder_widths": (4, 4, 8, 8)}.items()
    }
    model, unused, detected = import_reference(tmp_path / "bare.pth", given)
    assert detected is None and unused == [] and model.config.tasks == ("sal", "semseg")


def test_unsupported_reference_options_are_named(tmp_path):
    from mtlora_deploy.model.reference.checkpoint import detect_model_config

    cfg = _reference_config()
    cfg["MODEL"]["MTLORA"]["R"] = [8, 8, 16, 16]
    cfg["MODEL"]["MTLORA"]["R_PER_TASK"].pop("shared")
    with pytest.raises(WeightsError, match=r"MODEL\.MTLORA\.R = \[8, 8, 16, 16\] differs between stages"):
        detect_model_config(cfg, "ref.pth")
    cfg = _reference_config()
    cfg["MODEL"]["MTLORA"]["R_PER_TASK"]["sal"] = [4]
    with pytest.raises(WeightsError, match=r"R_PER_TASK differs between tasks"):
        detect_model_config(cfg, "ref.pth")
    cfg = _reference_config()
    cfg["MODEL"]["MTLORA"]["SHARED_MODE"] = "addition"
    with pytest.raises(WeightsError, match=r"SHARED_MODE = 'addition' is not supported"):
        detect_model_config(cfg, "ref.pth")


def test_export_reference_round_trips_to_identical_tensors(tmp_path, images):
    source = tiny_model("mtlora-plus-r16", **SOURCE)
    randomize_lora(source)
    save_checkpoint(source, tmp_path / "run" / "checkpoints" / "best", metadata={"epoch": 12})
    result = CliRunner().invoke(cli, ["export-reference", str(tmp_path / "run"), "-o", str(tmp_path / "ref.pth")])
    assert result.exit_code == 0, result.output
    assert "--resume" in result.output and "--tasks sal,semseg" in result.output
    raw = torch.load(tmp_path / "ref.pth", weights_only=True)  # plain types: the reference's torch.load reads it
    assert set(raw) == {"model", "config", "epoch", "max_accuracy"} and raw["epoch"] == 12
    assert "backbone.layers.0.downsample.reduction.linear.weight" in raw["model"]
    cfg = yaml.safe_load((tmp_path / "ref.yaml").read_text())
    assert cfg["MODEL"]["MTLORA"]["DOWNSAMPLER_ENABLED"] is True and "TASKS" not in cfg  # --cfg takes no TASKS
    model, unused, detected = import_reference(tmp_path / "ref.pth", {})
    assert unused == [] and detected["lora_on_reductions"][0] is True
    ours = source.state_dict()
    assert set(model.state_dict()) == set(ours)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ours[key], rtol=0, atol=0, msg=key)


def test_export_refuses_what_the_reference_cannot_express(tmp_path):
    with pytest.raises(ConfigError, match="adapter 'lora' has no reference-code equivalent"):
        export_reference_checkpoint(tiny_model("lora", head_channels=96), tmp_path / "x.pth")
    with pytest.raises(ConfigError, match=r"head_channels=16, but the reference head is 4 x sum\(decoder_widths\)"):
        export_reference_checkpoint(tiny_model("mtlora-r16"), tmp_path / "x.pth")
    assert not list(tmp_path.iterdir())


def test_swin_t_export_has_exactly_the_reference_keys():
    model = build_model(resolve_config("mtlora-r64"), warn_without_weights=False)
    rows = [line.split("\t") for line in REFERENCE_KEYS.read_text().splitlines()[1:]]
    ours = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in reference_state_dict(model).items()}
    assert ours == {key: (eval(shape), dtype) for key, shape, dtype, _ in rows}  # noqa: S307 - our own test data
    section = reference_model_section(model.config)
    assert section["MODEL"]["MTLORA"]["R_PER_TASK"]["shared"] == [64] * 4 and section["DATA"]["IMG_SIZE"] == 448


def test_import_checkpoint_cli_detects_and_names_disagreements(tmp_path, monkeypatch, capsys):
    from mtlora_deploy.cli.main import main

    _write_reference_pth(tmp_path / "ref.pth", tiny_model("mtlora-r16", **SOURCE))
    result = CliRunner().invoke(cli, ["import-checkpoint", str(tmp_path / "ref.pth"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "detected from" in text and "tasks=sal,semseg" in text and "task_agnostic_rank=8" in text
    assert (tmp_path / "out" / "model.safetensors").is_file()
    argv = ["mtlora", "import-checkpoint", str(tmp_path / "ref.pth"), "--preset", "mtlora-r64"]
    argv += ["-o", str(tmp_path / "o2")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit):
        main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--preset mtlora-r64 gives task_agnostic_rank=64" in lines[0]
    assert not (tmp_path / "o2").exists()
