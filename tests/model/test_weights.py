"""ImageNet weights from local files in the Microsoft and timm formats; bad files give one-line errors."""

import re

import pytest
import torch
from safetensors.torch import save_file

from mtlora_deploy.errors import WeightsError
from mtlora_deploy.model.backbone import create_timm_swin
from tests.conftest import tiny_config, tiny_model


def _pretrained_swin(seed=3):
    torch.manual_seed(seed)
    swin = create_timm_swin(tiny_config())
    return swin, {k: v.clone() for k, v in swin.state_dict().items()}


def _to_microsoft_layout(state):
    """Downsample stored at the END of stage i, classifier as head.weight, plus the MS buffers."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value
    out["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
    out["head.weight"], out["head.bias"] = torch.randn(10, 192), torch.randn(10)
    return out


def _assert_backbone_equals(model, state):
    ours = {k.replace("backbone.", "").replace(".base_layer.", "."): v for k, v in model.state_dict().items()}
    for key, value in state.items():
        if key.startswith(("head.", "norm.")):
            continue
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)


def test_microsoft_pth_format_loads(tmp_path):
    _, state = _pretrained_swin()
    torch.save({"model": _to_microsoft_layout(state)}, tmp_path / "swin_ms.pth")
    model = tiny_model(pretrained=str(tmp_path / "swin_ms.pth"))
    _assert_backbone_equals(model, state)


def test_timm_safetensors_and_state_dict_formats_load(tmp_path):
    _, state = _pretrained_swin()
    save_file(state, str(tmp_path / "swin.safetensors"))
    _assert_backbone_equals(tiny_model(pretrained=str(tmp_path / "swin.safetensors")), state)
    torch.save(state, tmp_path / "swin_timm.pth")
    _assert_backbone_equals(tiny_model("lora", pretrained=str(tmp_path / "swin_timm.pth")), state)


def test_building_without_weights_warns():
    from mtlora_deploy.model import build_model

    with pytest.warns(UserWarning, match="without pretrained weights"):
        build_model(tiny_config())


def test_missing_key_is_named(tmp_path):
    _, state = _pretrained_swin()
    del state["layers.2.blocks.1.mlp.fc1.weight"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match=r"w\.pth: missing key layers\.2\.blocks\.1\.mlp\.fc1\.weight"):
        tiny_model(pretrained=str(tmp_path / "w.pth"))


def test_wrong_shape_is_named(tmp_path):
    _, state = _pretrained_swin()
    state["layers.0.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(
        WeightsError, match=r"layers\.0\.blocks\.0\.attn\.qkv\.weight has shape \(3, 3\), expected \(72, 24\)"
    ):
        tiny_model(pretrained=str(tmp_path / "w.pth"))


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk.pth is not a PyTorch checkpoint .*it starts with b'not a ch'"):
        tiny_model(pretrained=str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match="does not exist"):
        tiny_model(pretrained=str(tmp_path / "nope.pth"))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="expected a dict of tensors"):
        tiny_model(pretrained=str(tmp_path / "list.pth"))
