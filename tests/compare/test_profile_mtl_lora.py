"""``mtlora profile`` on an mtl-lora model: its T task passes (per-task merged encoders, one after another) are
measured beside a merged MTLoRA single pass of the same backbone, tasks and heads, in the same run."""

import pytest

from mtlora_deploy.profile.api import run_profile
from mtlora_deploy.profile.comparisons import MTL_LORA_VS_MTLORA
from mtlora_deploy.profile.variants import mtlora_reference, per_task_merged
from tests.conftest import randomize_lora, tiny_model

TASKS = ("semseg", "sal", "normals")


@pytest.fixture(scope="module")
def mtl_model():
    model = tiny_model("mtl-lora", tasks=TASKS, mtl_rank=4, mtl_alpha=16.0)
    randomize_lora(model)
    return model.eval()


@pytest.fixture(scope="module")
def profiled(mtl_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    report = run_profile(
        [("tiny-mtl", mtl_model)],
        batches=[1, 2],
        iterations=2,
        warmup=1,
        threads=1,
        duration=0.0,
        rounds=6,  # the fewest with a 95% interval
        comparisons=["merged"],
        output=out,
    )
    return report, out


def test_roles_are_the_batched_pass_the_task_passes_and_mtlora(profiled):
    report, _ = profiled
    roles = {m["role"] for m in report["measurements"]}
    assert roles == {"single_pass", "merged", "mtlora_single_pass"}
    assert all(m["tasks"] == list(TASKS) for m in report["measurements"])


def test_comparison_row_per_batch_with_positive_ratios(profiled):
    rows = profiled[0]["comparisons"]["mtl_lora_vs_mtlora"]
    assert [r["batch"] for r in rows] == [1, 2]
    for row in rows:
        assert row["comparison"] == MTL_LORA_VS_MTLORA and row["tasks"] == list(TASKS)
        assert row["subject"] == "mtlora_single_pass" and row["baseline"] == "merged"
        assert row["subject_ms"] > 0 and row["baseline_ms"] > 0 and row["unmerged_batched_ms"] > 0
        assert row["value"] > 0 and row["ci_low"] <= row["ci_high"] and row["flop_ratio"] > 1  # T encoders vs one
    merged = profiled[0]["comparisons"]["merged_vs_unmerged"]
    assert len(merged) == 2 and all(r["value"] > 0 for r in merged)


def test_markdown_report_has_the_comparison_table(profiled):
    text = (profiled[1] / "profile.md").read_text()
    assert "### mtl lora vs mtlora" in text and MTL_LORA_VS_MTLORA in text


def test_variants_are_the_deployed_forms(mtl_model):
    deployed = per_task_merged(mtl_model)
    assert deployed.tasks == TASKS and len(deployed.models) == len(TASKS)
    reference = mtlora_reference(mtl_model)
    assert reference.config.adapter == "mtlora" and reference.tasks == TASKS
    assert reference.config.image_size == mtl_model.config.image_size
    assert reference.config.backbone == mtl_model.config.backbone


def test_an_mtlora_model_brings_no_mtl_lora_row(tmp_path):
    model = tiny_model("mtlora-r16", tasks=("semseg", "sal")).eval()
    report = run_profile(
        [("tiny", model)],
        batches=[1],
        iterations=1,
        warmup=0,
        threads=1,
        comparisons=["merged"],
        duration=0.0,
        rounds=2,
    )
    assert report["comparisons"]["mtl_lora_vs_mtlora"] == []
    assert {m["role"] for m in report["measurements"]} == {"single_pass", "merged"}
