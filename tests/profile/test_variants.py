"""Comparison variants also work when the profiled input is an already merged model."""

import torch

from mtlora_deploy.deploy.merge import is_merged, merge_task_agnostic
from mtlora_deploy.profile.variants import sub_model
from tests.conftest import randomize_lora, tiny_model


def test_task_subsets_of_a_merged_model_run_and_keep_the_shared_weights(images):
    model = tiny_model()
    randomize_lora(model)
    merged = merge_task_agnostic(model)
    sub = sub_model(merged, ("semseg", "sal"))
    assert is_merged(sub)
    with torch.no_grad():
        out = sub(images)
    assert {t: v.shape[1] for t, v in out.items()} == {"semseg": 21, "sal": 1}
    qkv = "backbone.layers.0.blocks.0.attn.qkv.weight"
    torch.testing.assert_close(sub.state_dict()[qkv], merged.state_dict()[qkv], rtol=0, atol=0)


def test_task_subsets_of_an_unmerged_model_compute_the_same_task_outputs(images):
    model = tiny_model().eval()
    randomize_lora(model)
    sub = sub_model(model, ("sal",))
    with torch.no_grad():
        torch.testing.assert_close(sub(images)["sal"], model(images)["sal"], rtol=1e-5, atol=1e-5)
