"""GMAC counts: a hand-counted module, and the same tiny model counted by torch and from its ONNX graph."""

import pytest
from torch import nn

from mtlora_deploy.profile.flops import onnx_gmac, torch_gmac
from tests.conftest import randomize_lora, tiny_model


class Small(nn.Module):
    config = None

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = self.conv(x)  # 8 x 16 x 16 outputs, 3 * 3 * 3 MACs each
        return {"out": self.fc(y.mean((2, 3)))}  # 8 * 5 MACs


def test_hand_counted_module():
    assert torch_gmac(Small(), 16) * 1e9 == pytest.approx(8 * 16 * 16 * 27 + 8 * 5)


@pytest.mark.slow  # an export (test_profile_api checks a 3-task model's ONNX count in the fast suite)
def test_onnx_count_equals_the_torch_count_of_the_merged_model(tmp_path):
    from mtlora_deploy.deploy.export import export_onnx
    from mtlora_deploy.deploy.merge import merge_task_agnostic

    model = tiny_model(tasks=("semseg", "sal"))
    randomize_lora(model)
    merged = merge_task_agnostic(model.eval())
    export_onnx(merged, tmp_path / "tiny.onnx", check=False)
    gmac, unknown = onnx_gmac(tmp_path / "tiny.onnx")
    assert unknown == 0 and gmac > 0
    assert gmac == pytest.approx(torch_gmac(merged, merged.config.image_size), rel=1e-6)
    # the attention matmuls are in both counts: more than the linear layers alone
    linear = sum(m.in_features * m.out_features for m in merged.modules() if isinstance(m, nn.Linear))
    assert gmac * 1e9 > linear
