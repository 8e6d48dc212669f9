"""``mtlora inspect``: what each kind of artefact holds, read from files the tests make, checksums checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from mtlora_deploy.cli.main import cli
from mtlora_deploy.report.inspect import KINDS, inspect_artifact, register_kind
from mtlora_deploy.utils.hashing import file_sha256
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The tiny model's fp32 graph and its fp16 and int8 variants."""
    from mtlora_deploy.calib.precision import make_precision_variant
    from mtlora_deploy.deploy.export import export_onnx

    folder = tmp_path_factory.mktemp("inspect")
    fp32 = export_onnx(tiny_model(), folder / "model.fp32.onnx", check=False).path
    calib = folder / "calib.npz"
    np.savez(calib, image=np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32))
    fp16 = make_precision_variant(fp32, "fp16", folder / "model.fp16.onnx", fidelity_images=0, show_progress=False)
    int8 = make_precision_variant(
        fp32,
        "int8",
        folder / "model.int8.onnx",
        calib,
        calibration_method="max",
        cache=False,
        fidelity_images=0,
        show_progress=False,
    )
    return {"fp32": fp32, "fp16": fp16, "int8": int8}


def test_onnx_graphs_say_tasks_io_precision_and_what_runs_low(graphs):
    fp32 = inspect_artifact(graphs["fp32"])
    assert fp32["kind"] == "onnx" and fp32["tasks"] == ["semseg", "human_parts", "sal", "normals"]
    assert fp32["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["batch", 3, 64, 64]}]
    assert [o["name"] for o in fp32["outputs"]] == fp32["tasks"] and fp32["precision"] == "fp32"
    assert fp32["low_precision"] is None and fp32["batch"] == "dynamic (batch)"
    assert fp32["files"][0]["sha256"] == file_sha256(graphs["fp32"]) and fp32["files"][0]["verified"] is None
    fp16 = inspect_artifact(graphs["fp16"])
    assert fp16["precision"] == "fp16" and fp16["low_precision"].endswith("kept in fp32")
    int8 = inspect_artifact(graphs["int8"])
    read, total = (int(x.split()[0]) for x in int8["low_precision"].split(" nodes")[0].split(" of "))
    assert int8["precision"] == "int8" and 0 < read <= total
    assert int8["details"]["calibration"]["images"] == 8


def test_plans_are_described_from_their_manifest_and_checked_against_it(tmp_path):
    from mtlora_deploy.engines.manifest import build_manifest, write_manifest

    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan bytes" * 100)
    manifest = build_manifest(
        {"runtime": "tensorrt-rtx", "runtime_version": "1.2.0"},
        target_compute_capabilities=["8.9", "12.0"],
        precision="int8",
        layer_summary={"compute_layers": 10, "compute_layers_with_int8_inputs": 7, "tactics_at": "build"},
        batch_profile={"min": 1, "opt": 8, "max": 32},
        tasks=["semseg", "sal"],
        inputs=[{"name": "image", "dtype": "float32", "shape": [-1, 3, 64, 64]}],
        outputs=[],
        plan={"file": plan.name, "bytes": plan.stat().st_size, "sha256": file_sha256(plan)},
    )
    write_manifest(plan, manifest)
    record = inspect_artifact(plan)
    assert record["kind"] == "plan" and record["batch"] == "1 to 32, tuned for 8" and record["precision"] == "int8"
    assert record["runtime"] == "tensorrt-rtx 1.2.0 on GPUs of compute capability 8.9, 12.0"
    assert record["low_precision"].startswith("7 of 10 GEMM/conv layers read int8 inputs")
    assert record["files"][0]["verified"] is True
    plan.write_bytes(b"plan bytes" * 99 + b"PLAN BYTES")  # same size, other bytes
    assert inspect_artifact(plan)["files"][0]["problem"] == "sha256 differs from the recorded one"
    result = CliRunner().invoke(cli, ["inspect", str(plan)])
    assert result.exit_code == 1 and "m.plan: sha256 differs from the recorded one" in str(result.exception)


def _run_folder(tmp_path):
    from mtlora_deploy.trainer.config import TrainConfig, run_origin, save_run_config
    from mtlora_deploy.trainer.optim import build_optimizer, build_scheduler
    from mtlora_deploy.trainer.run_state import Progress, save_training_state

    model = tiny_model(tasks=("semseg", "sal"))
    optimizer = build_optimizer(model, 1e-3, 0.05, (0.9, 0.999), 1e-8)
    scheduler = build_scheduler(optimizer, 10, 1, 1e-6, 1e-6)
    run = tmp_path / "run"
    origin = run_origin("mtlora-r16", None, {"backbone": "swin_test_tiny", "task_agnostic_rank": 4})
    save_run_config(run / "config.yaml", model.config, TrainConfig(), {"total_steps": 10}, origin)
    for step in (1, 2):
        save_training_state(run, model, optimizer, scheduler, None, Progress(step=step), best=step == 1)
    return run


def test_run_folders_say_their_preset_and_verify_every_set(tmp_path):
    run = _run_folder(tmp_path)
    record = inspect_artifact(run)
    assert record["kind"] == "run" and record["tasks"] == ["semseg", "sal"]
    assert record["details"]["origin"]["preset"] == "mtlora-r16"
    assert yaml.safe_load((run / "config.yaml").read_text())["origin"]["model_overrides"]["task_agnostic_rank"] == 4
    sets = record["details"]["checkpoint_sets"]
    assert [(s["step"], s["current"], s["verified"]) for s in sets] == [(2, True, True), (1, False, True)]
    assert all(f["verified"] for f in record["files"])
    target = (run / "checkpoints" / "last.json").resolve()
    data = target.read_bytes()
    target.unlink()  # last.json is not hard-linked elsewhere in set 2; write another file in its place
    target.write_bytes(data.replace(b'"step": 2', b'"step": 3'))
    bad = [f for f in inspect_artifact(run)["files"] if f["verified"] is False]
    assert [f["file"] for f in bad] == [str(target)]
    result = CliRunner().invoke(cli, ["inspect", str(run), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output[: result.output.rindex("}") + 1])["kind"] == "run"


def test_merged_folders_and_new_kinds(tmp_path):
    from mtlora_deploy.deploy.merge import merge_checkpoint
    from mtlora_deploy.model.checkpoint import save_checkpoint

    save_checkpoint(tiny_model(), tmp_path / "ckpt" / "model")
    merge_checkpoint(tmp_path / "ckpt", tmp_path / "merged")
    record = inspect_artifact(tmp_path / "merged")
    assert record["kind"] == "checkpoint" and record["details"]["checkpoint_kind"] == "merged"
    assert record["details"]["tensors"] > 0 and record["details"]["metadata"]["params_after"] > 0
    count = len(KINDS)
    try:  # one more kind (a Triton repository, later) is one registration
        register_kind("notes", "a notes file", lambda p: p.suffix == ".txt", lambda p: {"tasks": ["sal"]})
        (tmp_path / "a.txt").write_text("x")
        assert inspect_artifact(tmp_path / "a.txt")["kind"] == "notes"
    finally:
        del KINDS[count:]
