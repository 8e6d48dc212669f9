"""The JSON manifest written beside every TensorRT plan, and the early compatibility check that reads it.

A plan is only valid for the TensorRT version and GPU architecture that built it, and TensorRT's own error on a
mismatch is cryptic. The manifest (never prepended to the plan: that breaks trtexec and Triton) records both, so
loading on another machine fails early with one line naming the two environments. Nothing here imports TensorRT:
the environment probe takes every value as an argument and only asks TensorRT/torch for the ones not given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mtlora_deploy.errors import WeightsError
from mtlora_deploy.utils.atomic import write_json_atomic
from mtlora_deploy.utils.hashing import file_sha256

MANIFEST_FORMAT = "mtlora-deploy-engine-manifest"
MANIFEST_VERSION = 1
ENVIRONMENT_KEYS = ("tensorrt_version", "gpu_name", "compute_capability", "cuda_version")


class EngineMismatchError(WeightsError):
    """A plan was built for another TensorRT version or GPU architecture than this machine's."""


def manifest_path(plan: str | Path) -> Path:
    """``engines/model_fp16.plan`` -> ``engines/model_fp16.plan.json`` (never inside the plan)."""
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def probe_environment(device: int = 0, **known: Any) -> dict[str, Any]:
    """TensorRT version, GPU name, compute capability ("9.0") and CUDA version of this machine.

    Args:
        device: CUDA device index to describe.
        known: values that are already known (or, in tests, the environment to pretend); only missing keys are
            probed, through TensorRT and ``torch.cuda``. Unknown values are None.
    """
    env = {key: known.get(key) for key in ENVIRONMENT_KEYS}
    if env["tensorrt_version"] is None:
        env["tensorrt_version"] = _tensorrt_version()
    if env["gpu_name"] is None or env["compute_capability"] is None or env["cuda_version"] is None:
        env.update({k: v for k, v in _cuda_facts(device).items() if env[k] is None})
    return env


def _tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


def _cuda_facts(device: int) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"gpu_name": None, "compute_capability": None, "cuda_version": torch.version.cuda}
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(device)
        facts.update(gpu_name=torch.cuda.get_device_name(device), compute_capability=f"{major}.{minor}")
    return facts


def build_manifest(environment: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The manifest dict: format header, the build environment, then the build's own fields (precision, I/O...)."""
    from mtlora_deploy import __version__

    header = {"format": MANIFEST_FORMAT, "manifest_version": MANIFEST_VERSION, "toolkit_version": __version__}
    return {**header, **{key: environment.get(key) for key in ENVIRONMENT_KEYS}, **fields}


def write_manifest(plan: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``PLAN.json`` atomically; returns its path."""
    path = manifest_path(plan)
    write_json_atomic(path, manifest)
    return path


def read_manifest(plan: str | Path) -> dict[str, Any]:
    """Read and sanity-check the manifest beside ``plan``.

    Raises:
        WeightsError: the manifest is missing, not JSON or not an engine manifest.
    """
    path = manifest_path(plan)
    if not path.is_file():
        raise WeightsError(f"{plan}: no manifest {path.name} beside it; rebuild the plan with mtlora build-engine")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise WeightsError(f"{path}: not an mtlora-deploy engine manifest (format={_get(manifest, 'format')!r})")
    return manifest


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _release(version: str | None) -> str | None:
    """TensorRT plans are tied to major.minor.patch; the build number does not matter."""
    return None if version is None else ".".join(str(version).split(".")[:3])


def _describe(env: dict[str, Any]) -> str:
    return (f"TensorRT {env.get('tensorrt_version') or 'unknown'} on {env.get('gpu_name') or 'an unknown GPU'} "
            f"(compute capability {env.get('compute_capability') or 'unknown'})")


def check_compatibility(manifest: dict[str, Any], environment: dict[str, Any], plan: str | Path = "plan") -> None:
    """Fail early, in one line naming both environments, if the plan cannot run here.

    Args:
        manifest: the plan's manifest (``read_manifest``).
        environment: this machine (``probe_environment()``; tests pass a dict).
        plan: the plan's path, for the message.

    Raises:
        EngineMismatchError: the TensorRT release or the GPU compute capability differs.
    """
    reasons = []
    if _release(manifest.get("tensorrt_version")) != _release(environment.get("tensorrt_version")):
        reasons.append("TensorRT version")
    if str(manifest.get("compute_capability")) != str(environment.get("compute_capability")):
        reasons.append("GPU architecture")
    if reasons:
        raise EngineMismatchError(
            f"{plan}: {' and '.join(reasons)} differ: built with {_describe(manifest)}, this machine has "
            f"{_describe(environment)}; rebuild it here with: mtlora build-engine MODEL.onnx "
            f"--precision {manifest.get('precision', 'fp16')}"
        )


def check_plan_file(manifest: dict[str, Any], plan: str | Path) -> None:
    """The manifest must describe this very plan (a stale manifest would vouch for the wrong file)."""
    expected = _get(manifest.get("plan"), "sha256")
    if expected and file_sha256(plan) != expected:
        raise WeightsError(f"{plan}: its sha256 does not match {manifest_path(plan).name}; rebuild the plan")
