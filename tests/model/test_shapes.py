import itertools

import pytest
import torch

from mtlora_deploy.model import ALL_TASKS, build_model, resolve_config
from mtlora_deploy.model.config import TASK_OUTPUT_CHANNELS
from tests.conftest import tiny_model

SUBSETS = [s for n in range(1, len(ALL_TASKS) + 1) for s in itertools.combinations(ALL_TASKS, n)]


@pytest.mark.parametrize("tasks", SUBSETS, ids=lambda s: "+".join(s))
def test_every_task_subset_gives_logits_at_input_size(tasks, images):
    model = tiny_model("mtlora-r16", tasks=tasks).eval()
    with torch.no_grad():
        out = model(images)
    assert list(out) == list(tasks)
    for task, logits in out.items():
        assert logits.shape == (2, TASK_OUTPUT_CHANNELS[task], 64, 64)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("preset", ["lora", "full", "decoders", "bitfit", "mtlora-plus-r16"])
def test_baseline_presets_forward(preset, images):
    model = tiny_model(preset).eval()
    with torch.no_grad():
        out = model(images)
    assert {t: v.shape[1] for t, v in out.items()} == {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3}


def test_decoder_inputs_have_the_spec_widths_and_strides(images):
    model = tiny_model().eval()
    feats = model.backbone(images)
    dims = [24, 48, 96, 192]
    for task_feats in feats.values():
        assert [f.shape[1] for f in task_feats] == dims[1:] + dims[-1:]
        assert [f.shape[-1] for f in task_feats] == [8, 4, 2, 2]


@pytest.mark.slow  # full size: Swin-T mtlora-r64 built and run at 448 (~9 CPU-s)
def test_full_swin_t_448_forward_once():
    model = build_model(resolve_config("mtlora-r64"), warn_without_weights=False).eval()
    feats_shapes = []
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 448, 448))
        feats_shapes = [tuple(f.shape[1:]) for f in feats["semseg"]]
        out = model.decoders["semseg"](feats["semseg"])
    assert feats_shapes == [(192, 56, 56), (384, 28, 28), (768, 14, 14), (768, 14, 14)]
    assert out.shape == (1, 21, 56, 56)
    # every stage of Swin-T at 448 has more than one window, so the shifted mask is active everywhere
    for stage in model.backbone.layers:
        assert any(stage.blocks[-1].shift_size) and stage.blocks[-1].attn_mask is not None
