"""Our checkpoints round-trip; reference MTLoRA checkpoints import to the same function."""

import json

import pytest
import torch

import mtlora_deploy
from mtlora_deploy.errors import WeightsError
from mtlora_deploy.model.checkpoint import save_checkpoint
from mtlora_deploy.model.reference.keys import import_reference_checkpoint, ours_to_reference, save_reference_checkpoint
from tests.conftest import randomize_lora, tiny_config, tiny_model


def _outputs(model, images):
    with torch.no_grad():
        return model.eval()(images)


def test_checkpoint_round_trip_through_load(tmp_path, images):
    model = tiny_model("mtlora-r16", tasks=("semseg", "normals"))
    randomize_lora(model)
    save_checkpoint(model, tmp_path / "ckpt" / "model", metadata={"step": 7})
    info = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert info["model_config"]["tasks"] == ["semseg", "normals"] and info["metadata"]["step"] == 7
    loaded = mtlora_deploy.load(tmp_path / "ckpt")
    assert not loaded.training
    for task, value in _outputs(model, images).items():
        torch.testing.assert_close(_outputs(loaded, images)[task], value, rtol=0, atol=0)


def test_reference_round_trip_gives_identical_outputs(tmp_path, images):
    model = tiny_model("mtlora-r16")
    randomize_lora(model)
    save_reference_checkpoint(model, tmp_path / "ref.pth")
    raw = torch.load(tmp_path / "ref.pth", weights_only=True)["model"]
    assert "backbone.layers.0.downsample.reduction.weight" in raw  # MS layout: end of stage 0
    assert "backbone.layers.0.blocks.0.attn.qkv.linear.weight" in raw
    assert "downsampler.semseg.downsample_0.weight" in raw and "decoders.decoders.sal.last_layer.3.bias" in raw
    imported, unused = import_reference_checkpoint(tmp_path / "ref.pth", tiny_config("mtlora-r16"))
    assert unused == []
    for task, value in _outputs(model, images).items():
        torch.testing.assert_close(_outputs(imported, images)[task], value, rtol=0, atol=0)


def test_reference_buffers_are_ignored_but_foreign_keys_are_reported(tmp_path):
    model = tiny_model("mtlora-r16")
    state = ours_to_reference(model.state_dict())
    state["backbone.layers.0.blocks.0.attn_mask"] = torch.zeros(1)
    state["backbone.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(1)
    state["mystery.weight"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "ref.pth")
    with pytest.raises(WeightsError, match="1 keys fit nowhere in the model, first mystery.weight"):
        import_reference_checkpoint(tmp_path / "ref.pth", tiny_config("mtlora-r16"))
    _, unused = import_reference_checkpoint(tmp_path / "ref.pth", tiny_config("mtlora-r16"), allow_unused=True)
    assert unused == ["mystery.weight"]


def test_reference_rank_mismatch_names_the_key(tmp_path):
    save_reference_checkpoint(tiny_model("mtlora-r16", task_agnostic_rank=8), tmp_path / "ref.pth")
    with pytest.raises(WeightsError, match=r"lora_shared_A has shape \(8, 24\), expected \(4, 24\); check `preset`"):
        import_reference_checkpoint(tmp_path / "ref.pth", tiny_config("mtlora-r16"))


def test_missing_task_in_reference_is_named(tmp_path):
    save_reference_checkpoint(tiny_model("mtlora-r16", tasks=("semseg",)), tmp_path / "ref.pth")
    with pytest.raises(
        WeightsError, match=r"missing key backbone\.\S+\.lora_tasks_A\.sal .*check `preset` \(rank\) and `tasks`"
    ):
        import_reference_checkpoint(tmp_path / "ref.pth", tiny_config("mtlora-r16", tasks=("semseg", "sal")))


def test_load_errors(tmp_path):
    with pytest.raises(WeightsError, match="no checkpoint found"):
        mtlora_deploy.load(tmp_path)
    with pytest.raises(WeightsError, match="expected a checkpoint pair"):
        mtlora_deploy.load(tmp_path / "x.safetensors")
