"""ONNX export of the task-conditioned mtl-lora model: one checked graph per task (also via the CLI), or one graph
holding the per-task merged encoders; ONNX Runtime matches the UNMERGED model per task."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mtlora_deploy.cli.main import cli
from mtlora_deploy.deploy.export import export_onnx, resize_model
from mtlora_deploy.deploy.export_mtl import export_one_graph, export_per_task, needs_per_task_export, per_task_path
from mtlora_deploy.deploy.merge_mtl import merge_per_task
from mtlora_deploy.deploy.metadata import read_onnx_metadata
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.checkpoint import save_checkpoint
from tests.conftest import randomize_lora, run_ort, tiny_model

TASKS = ("semseg", "normals")


def _mtl_model():
    model = tiny_model("mtl-lora", tasks=TASKS, mtl_rank=4, mtl_alpha=16.0).eval()
    randomize_lora(model)
    return model


def _relative(ort_out: np.ndarray, ref: torch.Tensor) -> float:
    return float(np.abs(ort_out - ref.numpy()).max() / ref.abs().max().item())


@pytest.fixture(scope="module")
def per_task_export(tmp_path_factory):
    model = _mtl_model()
    reports = export_per_task(model, tmp_path_factory.mktemp("per_task") / "model.onnx")
    return model, reports


def test_per_task_files_are_checked_single_task_graphs(per_task_export):
    _, reports = per_task_export
    assert list(reports) == list(TASKS)
    folder = reports["semseg"].path.parent
    assert sorted(p.name for p in folder.iterdir()) == ["model.normals.onnx", "model.semseg.onnx"]
    for task, report in reports.items():
        assert report.path == per_task_path(folder / "model.onnx", task) and report.tasks == (task,)
        assert [r.task for r in report.parity] == [task] and all(r.ok for r in report.parity) and not report.warnings
        meta = read_onnx_metadata(report.path)
        assert meta["tasks"] == [task] and meta["model_config"]["adapter"] == "mtl-lora"
        assert meta["source"] == f"<in-memory MultiTaskModel> [{task}]"


def test_onnx_runtime_matches_the_unmerged_model_for_a_task(per_task_export):
    model, reports = per_task_export
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model(images)  # batched task passes through the MTL-LoRA layers
    outs = run_ort(reports["normals"].path, images)
    assert list(outs) == ["normals"] and outs["normals"].shape == tuple(ref["normals"].shape)
    assert _relative(outs["normals"], ref["normals"]) <= 1e-4


def test_one_graph_holds_every_per_task_encoder(tmp_path):
    model = _mtl_model()
    report = export_one_graph(model, tmp_path / "all.onnx", image_size=128, legacy=True)
    assert report.tasks == TASKS and report.image_size == 128 and all(r.ok for r in report.parity)
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    outs = run_ort(report.path, images)
    with torch.no_grad():
        for task in TASKS:
            ref = resize_model(merge_per_task(model, task), 128)  # the same weights at a 128 input
            assert _relative(outs[task], ref(images)[task]) <= 1e-4, task


def test_which_sources_need_per_task_export(tmp_path):
    model = _mtl_model()
    save_checkpoint(model, tmp_path / "run" / "checkpoints" / "last")
    save_checkpoint(merge_per_task(model, "semseg"), tmp_path / "merged" / "model", kind="merged")
    save_checkpoint(tiny_model("mtlora-r16"), tmp_path / "mtlora" / "model")
    assert needs_per_task_export(model) and needs_per_task_export(tmp_path / "run")
    assert not needs_per_task_export(tmp_path / "merged") and not needs_per_task_export(tmp_path / "mtlora")
    assert not needs_per_task_export(tmp_path / "missing") and not needs_per_task_export(tmp_path)
    assert not needs_per_task_export(tiny_model("mtl-lora", tasks=("sal",), mtl_rank=2))


def test_export_onnx_of_a_multi_task_mtl_lora_model_points_to_per_task_export(tmp_path):
    with pytest.raises(ConfigError, match="task-conditioned.*one ONNX graph per task"):
        export_onnx(_mtl_model(), tmp_path / "model.onnx")
    with pytest.raises(ConfigError, match="`tasks`: got edge, expected a subset of semseg,normals"):
        export_per_task(_mtl_model(), tmp_path / "model.onnx", tasks=["edge"])
    assert list(tmp_path.iterdir()) == []


def test_export_command_writes_per_task_files_and_says_so(tmp_path):
    save_checkpoint(_mtl_model(), tmp_path / "run" / "checkpoints" / "best")
    args = [
        "export",
        str(tmp_path / "run"),
        "-o",
        str(tmp_path / "out" / "model.onnx"),
        "--no-check",
        "--legacy-exporter",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "mtl-lora is task-conditioned" in result.output and "one merged ONNX graph per task" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.normals.onnx", "model.semseg.onnx"]
    assert result.output.count("wrote") == 2 and "model.TASK.onnx" in result.output
