"""pretrained=timm through the Hugging Face Hub cache (a local fake cache, offline); reference backbone files."""

import sys

import pytest
import torch
from safetensors.torch import save_file

from mtlora_deploy.errors import ConfigError, WeightsError
from mtlora_deploy.model.backbone import create_timm_swin
from mtlora_deploy.model.reference.export import reference_state_dict
from tests.conftest import tiny_config, tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_hub_cache(root, repo_id, state):
    """The Hub cache layout hf_hub_download resolves offline: refs/main -> snapshots/<commit>/model.safetensors."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / COMMIT / "model.safetensors"))
    return root


def _timm_state(seed=5):
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in create_timm_swin(tiny_config()).state_dict().items()}
    state["head.fc.weight"], state["head.fc.bias"] = torch.randn(10, 192), torch.randn(10)
    return state


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _assert_backbone_equals(model, state):
    ours = {k.replace("backbone.", "").replace(".base_layer.", "."): v for k, v in model.state_dict().items()}
    for key, value in state.items():
        if not key.startswith(("head.", "norm.")):
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)


def test_pretrained_timm_reads_the_hub_cache(offline_hub):
    state = _timm_state()
    _fake_hub_cache(offline_hub, "timm/swin_tiny_patch4_window7_224.ms_in1k", state)
    _assert_backbone_equals(tiny_model(pretrained="timm"), state)
    _assert_backbone_equals(tiny_model("lora", pretrained="timm:swin_tiny_patch4_window7_224.ms_in1k"), state)


def test_pretrained_timm_offline_without_cache_is_one_line(offline_hub):
    with pytest.raises(WeightsError) as info:
        tiny_model(pretrained="timm")
    message = str(info.value)
    assert "\n" not in message
    assert "timm/swin_tiny_patch4_window7_224.ms_in1k" in message and "`pretrained`=PATH" in message
    with pytest.raises(ConfigError, match="timm has no hub weights named 'swin_tiny_nonsense'"):
        tiny_model(pretrained="timm:swin_tiny_nonsense")


def test_cli_offline_error_names_the_local_file_alternative(offline_hub, monkeypatch, capsys):
    from mtlora_deploy.cli.main import main

    argv = [
        "mtlora",
        "info",
        "--preset",
        "mtlora-r16",
        "--set",
        "pretrained=timm",
        "--set",
        "backbone=swin_test_tiny",
        "--set",
        "image_size=64",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 1 and len(lines) == 1
    assert lines[0].startswith("Error: pretrained=timm:") and "--set pretrained=PATH" in lines[0]


def test_reference_resume_backbone_layouts_load(tmp_path):
    state = _timm_state()
    save_file(state, str(tmp_path / "timm.safetensors"))
    source = tiny_model("full", pretrained=str(tmp_path / "timm.safetensors"))
    # a reference multi-task state dict without LoRA: backbone.* keys, decoders ignored
    torch.save({"model": reference_state_dict(source), "epoch": 3}, tmp_path / "whole.pth")
    _assert_backbone_equals(tiny_model(pretrained=str(tmp_path / "whole.pth")), state)
    # its frozen linears under .linear (what the reference's own MTLoRA layers hold), LoRA factors left out
    with_weights = tiny_model("mtlora-r16", pretrained=str(tmp_path / "timm.safetensors"))
    linear = {k: v for k, v in reference_state_dict(with_weights).items() if "lora_" not in k}
    assert any(".attn.qkv.linear.weight" in k for k in linear)
    torch.save({"model": linear}, tmp_path / "linear.pth")
    _assert_backbone_equals(tiny_model(pretrained=str(tmp_path / "linear.pth")), state)
    lora_state = reference_state_dict(tiny_model("mtlora-r16"))
    torch.save({"model": lora_state}, tmp_path / "trained.pth")
    with pytest.raises(WeightsError, match="holds trained LoRA weights .* mtlora import-checkpoint"):
        tiny_model(pretrained=str(tmp_path / "trained.pth"))
