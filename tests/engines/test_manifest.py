"""Engine manifests and the early compatibility check, exercised with manifests and environments written here."""

import hashlib
import json

import pytest

from mtlora_deploy.engines.manifest import (
    MANIFEST_FORMAT,
    EngineMismatchError,
    build_manifest,
    check_compatibility,
    check_plan_file,
    manifest_path,
    probe_environment,
    read_manifest,
    write_manifest,
)
from mtlora_deploy.errors import MTLoRAError, WeightsError
from mtlora_deploy.utils.hashing import file_sha256

H100 = {
    "runtime": "tensorrt",
    "runtime_version": "10.13.0.35",
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "compute_capability": "9.0",
    "cuda_version": "12.9",
}


def _manifest(**env) -> dict:
    return build_manifest(
        {**H100, **env},
        precision="fp16",
        batch_profile={"min": 1, "opt": 8, "max": 32},
        tasks=["semseg", "sal"],
        image_size=64,
    )


def test_manifest_lives_beside_the_plan_not_inside_it(tmp_path):
    plan = tmp_path / "engines" / "model_fp16.plan"
    plan.parent.mkdir()
    plan.write_bytes(b"plan bytes")
    path = write_manifest(plan, _manifest())
    assert path == manifest_path(plan) == tmp_path / "engines" / "model_fp16.plan.json"
    assert plan.read_bytes() == b"plan bytes"
    loaded = read_manifest(plan)
    assert loaded["format"] == MANIFEST_FORMAT and loaded["runtime_version"] == "10.13.0.35"
    assert loaded["compute_capability"] == "9.0" and loaded["tasks"] == ["semseg", "sal"]
    assert loaded["toolkit_version"]


def test_same_environment_passes_and_build_number_is_ignored():
    check_compatibility(_manifest(), H100)
    check_compatibility(_manifest(runtime_version="10.13.0.35"), {**H100, "runtime_version": "10.13.0.99"})


@pytest.mark.parametrize(
    "here, words",
    [
        (
            {**H100, "compute_capability": "8.0", "gpu_name": "NVIDIA A100-SXM4-80GB"},
            ["GPU architecture", "8.0", "9.0"],
        ),
        ({**H100, "runtime_version": "11.0.0.10"}, ["TensorRT version", "10.13.0.35", "11.0.0.10"]),
        ({**H100, "runtime_version": "10.14.1.48", "compute_capability": "8.9"}, ["TensorRT version and GPU"]),
    ],
)
def test_mismatch_fails_early_with_one_line_naming_both(here, words):
    with pytest.raises(EngineMismatchError) as info:
        check_compatibility(_manifest(), here, "engines/model_fp16.plan")
    message = str(info.value)
    assert "\n" not in message and message.startswith("engines/model_fp16.plan:")
    assert "NVIDIA H100 80GB HBM3" in message and "mtlora build-engine" in message
    assert all(word in message for word in words), message
    assert isinstance(info.value, MTLoRAError)


def test_unknown_environment_is_a_mismatch_not_a_pass():
    with pytest.raises(EngineMismatchError, match="unknown"):
        check_compatibility(_manifest(), {"runtime_version": None, "compute_capability": None})


def test_read_manifest_errors_name_the_file(tmp_path):
    plan = tmp_path / "m.plan"
    with pytest.raises(WeightsError, match="no manifest m.plan.json"):
        read_manifest(plan)
    manifest_path(plan).write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        read_manifest(plan)
    manifest_path(plan).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(WeightsError, match="not an mtlora-deploy engine manifest"):
        read_manifest(plan)


def test_plan_hash_must_match_its_manifest(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"\x00engine")
    manifest = {**_manifest(), "plan": {"file": plan.name, "sha256": hashlib.sha256(b"\x00engine").hexdigest()}}
    check_plan_file(manifest, plan)
    assert file_sha256(plan) == manifest["plan"]["sha256"]
    plan.write_bytes(b"\x00another engine")
    with pytest.raises(WeightsError, match="sha256 does not match"):
        check_plan_file(manifest, plan)


def test_probe_environment_uses_given_values_without_probing():
    assert probe_environment(**H100) == H100
    partial = probe_environment(runtime_version="10.9.0")
    assert partial["runtime_version"] == "10.9.0" and partial["runtime"] == "tensorrt" and set(partial) == set(H100)
    rtx = probe_environment(runtime="tensorrt-rtx", runtime_version="1.7.1.116")
    assert rtx["runtime"] == "tensorrt-rtx" and rtx["runtime_version"] == "1.7.1.116"


# -- the two flavours: pure manifest logic, so it runs here without a GPU -------------------------------------------
RTX_4090 = {
    "runtime": "tensorrt-rtx",
    "runtime_version": "1.7.1.116",
    "gpu_name": "NVIDIA GeForce RTX 4090",
    "compute_capability": "8.9",
    "cuda_version": "13.0",
}


def _rtx_manifest(targets=None) -> dict:
    env = {**RTX_4090, "gpu_name": None, "compute_capability": None}
    extra = {"target_compute_capabilities": targets} if targets else {}
    return build_manifest(env, precision="fp16", tasks=["sal"], image_size=64, **extra)


def test_rtx_plan_runs_on_its_targets_and_the_build_number_is_ignored():
    check_compatibility(_rtx_manifest(), RTX_4090)  # the documented default set holds 8.9
    check_compatibility(_rtx_manifest(), {**RTX_4090, "runtime_version": "1.7.1.200", "compute_capability": "12.0"})
    check_compatibility(_rtx_manifest(["8.6"]), {**RTX_4090, "compute_capability": "8.6"})


def test_rtx_plan_on_an_h100_fails_before_tensorrt_naming_both_sides():
    h100 = {**H100, "runtime": "tensorrt-rtx", "runtime_version": "1.7.1.116"}
    with pytest.raises(EngineMismatchError) as info:
        check_compatibility(_rtx_manifest(), h100, "engines/m_rtx.plan")
    message = str(info.value)
    assert "\n" not in message and message.startswith("engines/m_rtx.plan:")
    assert "8.6, 8.9, 12.0" in message and "NVIDIA H100 80GB HBM3" in message and "9.0" in message
    assert "--runtime tensorrt" in message  # sm90 has no TensorRT-RTX kernels: the fix is the other flavour


def test_rtx_plan_outside_its_explicit_targets_says_which_target_to_build():
    with pytest.raises(EngineMismatchError, match=r"compute capabilities 12\.0,.*RTX 4090.*--target sm89"):
        check_compatibility(_rtx_manifest(["12.0"]), RTX_4090)


def test_rtx_version_mismatch_names_both_versions():
    with pytest.raises(EngineMismatchError, match=r"TensorRT-RTX version differs: built with 1\.7\.1\.116.*1\.8\.0"):
        check_compatibility(_rtx_manifest(), {**RTX_4090, "runtime_version": "1.8.0.10"})


@pytest.mark.parametrize("plan_runtime, here", [("tensorrt-rtx", "tensorrt"), ("tensorrt", "tensorrt-rtx")])
def test_a_plan_with_the_other_runtime_fails_in_one_line(plan_runtime, here):
    manifest = _rtx_manifest() if plan_runtime == "tensorrt-rtx" else _manifest()
    with pytest.raises(EngineMismatchError) as info:
        check_compatibility(manifest, {**(RTX_4090 if here == "tensorrt-rtx" else H100), "runtime": here}, "m.plan")
    message = str(info.value)
    assert "\n" not in message and "TensorRT-RTX 1.7.1.116" in message and "TensorRT 10.13.0.35" in message
    assert f"the {plan_runtime} runtime" in message and f"--runtime {here}" in message


def test_format_1_manifests_still_read_as_tensorrt():
    legacy = {
        "format": MANIFEST_FORMAT,
        "manifest_version": 1,
        "tensorrt_version": "10.13.0.35",
        "compute_capability": "9.0",
        "gpu_name": "NVIDIA H100 80GB HBM3",
    }
    check_compatibility(legacy, H100)
    with pytest.raises(EngineMismatchError, match="TensorRT version"):
        check_compatibility(legacy, {**H100, "runtime_version": "10.14.1.48"})
