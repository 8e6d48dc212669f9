"""export-triton: every config.pbtxt parses with Triton's own schema, names/dtypes/dims are the graph's or the plan
manifest's, and what Triton cannot load (TensorRT-RTX plans, bad batch profiles) is refused in one line."""

from __future__ import annotations

import json

import onnx
import pytest

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.serve.repository import RepositoryOptions, export_triton, model_names
from mtlora_deploy.serve.schema import check_repository, parse_config
from tests.serve.conftest import TASKS


def test_every_config_parses_with_tritons_schema(tiny_repository, schema):
    configs = check_repository(tiny_repository)
    assert set(configs) == set(model_names("mtlora").values())
    for path in tiny_repository.glob("*/config.pbtxt"):
        assert parse_config(path.read_text(), path).name == path.parent.name


def test_schema_refuses_a_misspelt_field(tiny_repository, schema):
    text = (tiny_repository / "mtlora_model" / "config.pbtxt").read_text().replace("max_batch_size", "max_batch_sise")
    with pytest.raises(ConfigError, match="max_batch_sise"):
        parse_config(text, "config.pbtxt")


def test_model_step_io_is_the_graphs(tiny_repository, tiny_graph, schema):
    config = check_repository(tiny_repository)["mtlora_model"]
    graph = onnx.load(str(tiny_graph), load_external_data=False).graph
    names = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim][1:] for o in graph.output}
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert {o.name: list(o.dims) for o in config.output} == names
    assert [i.name for i in config.input] == [graph.input[0].name] and list(config.input[0].dims) == [3, 64, 64]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500 and config.model_warmup[0].batch_size == 1
    ensemble = check_repository(tiny_repository)["mtlora"]
    assert [o.name for o in ensemble.output] == list(TASKS)
    assert (tiny_repository / "mtlora_preprocess" / "1" / "mtlora_imaging.py").is_file()


def test_options_reach_the_configs(tiny_graph, schema, tmp_path):
    options = RepositoryOptions(name="seg", max_batch=4, instances=2, max_queue_delay_us=0, ort_tensorrt_fp16=True)
    configs = check_repository(export_triton(tiny_graph, tmp_path / "repo", options).path)
    step = configs["seg_model"]
    assert step.max_batch_size == 4 and step.instance_group[0].count == 2
    accelerator = step.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert configs["seg"].ensemble_scheduling.step[1].model_name == "seg_model"


def test_existing_output_and_bad_options_are_refused(tiny_graph, schema, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        export_triton(tiny_graph, tmp_path / "taken")
    with pytest.raises(ConfigError, match="`name`"):
        RepositoryOptions(name="a b")
    assert not [p for p in tmp_path.iterdir() if p.name != "taken"]  # nothing half-written


def _manifest_plan(tiny_graph, tmp_path, runtime: str, version: str, batch: dict) -> object:
    """A plan file with the manifest build-engine writes (from the graph's own I/O); export-triton reads only the
    manifest and copies the plan, so the plan's bytes are the graph's (no GPU here to build a full TensorRT one)."""
    from mtlora_deploy.engines.manifest import build_manifest, write_manifest
    from mtlora_deploy.utils.hashing import file_sha256
    from mtlora_deploy.utils.onnx_info import engine_fields

    plan = tmp_path / "model.plan"
    plan.write_bytes(tiny_graph.read_bytes())
    graph = onnx.load(str(tiny_graph), load_external_data=False).graph

    def io(value):
        return {
            "name": value.name,
            "shape": [d.dim_value or -1 for d in value.type.tensor_type.shape.dim],
            "dtype": "float32",
        }

    env = {
        "runtime": runtime,
        "runtime_version": version,
        "gpu_name": "H100",
        "compute_capability": "9.0",
        "cuda_version": "12.8",
    }
    manifest = build_manifest(
        env,
        precision="fp16",
        batch_profile=batch,
        inputs=[io(graph.input[0])],
        outputs=[io(o) for o in graph.output],
        plan={"file": plan.name, "sha256": file_sha256(plan)},
        **engine_fields(tiny_graph),
    )
    write_manifest(plan, manifest)
    return plan


def test_a_tensorrt_plan_becomes_a_tensorrt_plan_step_with_its_batch_profile(tiny_graph, schema, tmp_path):
    plan = _manifest_plan(tiny_graph, tmp_path, "tensorrt", "10.8.0.43", {"min": 1, "opt": 8, "max": 16})
    report = export_triton(plan, tmp_path / "repo")
    step = check_repository(report.path)["mtlora_model"]
    assert step.platform == "tensorrt_plan" and step.max_batch_size == 16
    assert (report.path / "mtlora_model" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert (
        "25.01, 25.02" in report.notes[0]
        and json.loads((report.path / "mtlora_repository.json").read_text())["tensorrt"] == "10.8.0"
    )
    with pytest.raises(ConfigError, match="`max_batch` 32.*up to 16"):
        export_triton(plan, tmp_path / "repo2", RepositoryOptions(max_batch=32))


@pytest.mark.parametrize(
    "runtime, version, batch, message",
    [
        ("tensorrt-rtx", "1.7.0.1", {"min": 1, "opt": 8, "max": 8}, "TensorRT-RTX plan; no Triton backend loads"),
        ("tensorrt", "10.8.0.43", {"min": 4, "opt": 8, "max": 8}, "batch profile starts at 4"),
        ("tensorrt", "8.6.1", {"min": 1, "opt": 8, "max": 8}, "rebuild it with TensorRT 10"),
    ],
)
def test_plans_triton_cannot_serve_are_refused(tiny_graph, schema, tmp_path, runtime, version, batch, message):
    plan = _manifest_plan(tiny_graph, tmp_path, runtime, version, batch)
    with pytest.raises(ConfigError, match=message):
        export_triton(plan, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
