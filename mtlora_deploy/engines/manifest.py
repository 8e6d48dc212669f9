"""The JSON manifest written beside every TensorRT plan, and the early compatibility check that reads it.

A plan is only valid for the runtime flavour and version that built it (TensorRT or TensorRT-RTX) and, for
TensorRT, the GPU architecture it was built on; a TensorRT-RTX plan runs on the compute capabilities it targets.
TensorRT's own error on a mismatch is cryptic. The manifest (never prepended to the plan: that breaks trtexec and
Triton) records all of it, so loading elsewhere fails early with one line naming both sides. Nothing here imports
TensorRT: the environment probe takes every value as an argument and only asks TensorRT/torch for the ones not given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mtlora_deploy.engines.runtimes import FLAVOURS, RTX_DEFAULT_TARGETS, RTX_TARGETS, TENSORRT, TENSORRT_RTX, sm
from mtlora_deploy.errors import WeightsError
from mtlora_deploy.utils.atomic import write_json_atomic
from mtlora_deploy.utils.hashing import file_sha256

MANIFEST_FORMAT = "mtlora-deploy-engine-manifest"
MANIFEST_VERSION = 2
ENVIRONMENT_KEYS = ("runtime", "runtime_version", "gpu_name", "compute_capability", "cuda_version")


class EngineMismatchError(WeightsError):
    """A plan was built for another TensorRT version or GPU architecture than this machine's."""


def manifest_path(plan: str | Path) -> Path:
    """``engines/model_fp16.plan`` -> ``engines/model_fp16.plan.json`` (never inside the plan)."""
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def probe_environment(device: int = 0, **known: Any) -> dict[str, Any]:
    """Runtime flavour and version, GPU name, compute capability ("9.0") and CUDA version of this machine.

    Args:
        device: CUDA device index to describe.
        known: values that are already known (or, in tests, the environment to pretend); only missing keys are
            probed, through the runtime's package and ``torch.cuda``. Unknown values are None. ``runtime`` defaults
            to ``tensorrt``; a legacy ``tensorrt_version`` is read as the TensorRT runtime's version.
    """
    known = _upgrade(known)
    env = {key: known.get(key) for key in ENVIRONMENT_KEYS}
    env["runtime"] = env["runtime"] or TENSORRT
    if env["runtime_version"] is None:
        env["runtime_version"] = _runtime_version(env["runtime"])
    if env["gpu_name"] is None or env["compute_capability"] is None or env["cuda_version"] is None:
        env.update({k: v for k, v in _cuda_facts(device).items() if env[k] is None})
    return env


def _upgrade(fields: dict[str, Any]) -> dict[str, Any]:
    """Manifests (and environments) of format 1 named the version ``tensorrt_version`` and had no runtime."""
    if "runtime_version" not in fields and "tensorrt_version" in fields:
        return {**fields, "runtime": fields.get("runtime") or TENSORRT, "runtime_version": fields["tensorrt_version"]}
    return fields


def manifest_runtime(manifest: dict[str, Any]) -> str:
    """The flavour that built the plan (``tensorrt`` for manifests older than the field)."""
    return str(manifest.get("runtime") or TENSORRT)


def _runtime_version(runtime: str) -> str | None:
    import importlib

    try:
        return str(importlib.import_module(FLAVOURS[runtime].module).__version__)
    except ImportError:
        return None


def _cuda_facts(device: int) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"gpu_name": None, "compute_capability": None, "cuda_version": torch.version.cuda}
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(device)
        facts.update(gpu_name=torch.cuda.get_device_name(device), compute_capability=f"{major}.{minor}")
    return facts


def build_manifest(environment: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The manifest dict: format header, the build environment, then the build's own fields (precision, I/O...)."""
    from mtlora_deploy._version import __version__

    header = {"format": MANIFEST_FORMAT, "manifest_version": MANIFEST_VERSION, "toolkit_version": __version__}
    environment = _upgrade(environment)
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
    env = _upgrade(env)
    title = FLAVOURS.get(env.get("runtime") or TENSORRT, FLAVOURS[TENSORRT]).title
    return (
        f"{title} {env.get('runtime_version') or 'unknown'} on {env.get('gpu_name') or 'an unknown GPU'} "
        f"(compute capability {env.get('compute_capability') or 'unknown'})"
    )


def plan_targets(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The compute capabilities a TensorRT-RTX plan runs on (its build's ``targets``, else the documented
    default set)."""
    return tuple(manifest.get("target_compute_capabilities") or RTX_DEFAULT_TARGETS)


def check_runtime(
    manifest: dict[str, Any], runtime: str, plan: str | Path = "plan", version: str | None = None
) -> None:
    """A plan opens only with the flavour that built it: one line naming both otherwise."""
    built = manifest_runtime(manifest)
    if runtime != built:
        here = f"{FLAVOURS[runtime].title} {version or ''}".rstrip()
        raise EngineMismatchError(
            f"{plan}: built with {FLAVOURS[built].title} {manifest.get('runtime_version') or ''}".rstrip()
            + f", asked to run with {here}; the two plan formats are not interchangeable: run it with the {built} "
            f"runtime or rebuild it with: mtlora build-engine MODEL.onnx --runtime {runtime}"
        )


def check_compatibility(manifest: dict[str, Any], environment: dict[str, Any], plan: str | Path = "plan") -> None:
    """Fail early, in one line naming both sides, if the plan cannot run here.

    Args:
        manifest: the plan's manifest (``read_manifest``).
        environment: this machine (``probe_environment()``; tests pass a dict).
        plan: the plan's path, for the message.

    Raises:
        EngineMismatchError: another runtime flavour, another runtime release, or a GPU the plan was not built for
            (TensorRT: another compute capability; TensorRT-RTX: one outside the plan's targets).
    """
    manifest, environment = _upgrade(manifest), _upgrade(environment)
    runtime = manifest_runtime(manifest)
    check_runtime(manifest, environment.get("runtime") or TENSORRT, plan, environment.get("runtime_version"))
    if runtime == TENSORRT_RTX:
        _check_rtx(manifest, environment, plan)
        return
    reasons = []
    if _release(manifest.get("runtime_version")) != _release(environment.get("runtime_version")):
        reasons.append("TensorRT version")
    if str(manifest.get("compute_capability")) != str(environment.get("compute_capability")):
        reasons.append("GPU architecture")
    if reasons:
        raise EngineMismatchError(
            f"{plan}: {' and '.join(reasons)} differ: built with {_describe(manifest)}, this machine has "
            f"{_describe(environment)}; rebuild it here with: mtlora build-engine MODEL.onnx "
            f"--precision {manifest.get('precision', 'fp16')}"
        )


def _check_rtx(manifest: dict[str, Any], environment: dict[str, Any], plan: str | Path) -> None:
    targets, here = plan_targets(manifest), str(environment.get("compute_capability"))
    built, have = manifest.get("runtime_version"), environment.get("runtime_version")
    if _release(built) != _release(have):
        raise EngineMismatchError(
            f"{plan}: TensorRT-RTX version differs: built with {built}, this machine has {have or 'unknown'}; "
            f"rebuild it with: mtlora build-engine MODEL.onnx --runtime tensorrt-rtx"
        )
    if here in targets:
        return
    gpu = f"{environment.get('gpu_name') or 'this GPU'} (compute capability {here})"
    if here in RTX_TARGETS:
        fix = f"rebuild it for this GPU: mtlora build-engine MODEL.onnx --runtime tensorrt-rtx --target {sm(here)}"
    else:
        fix = (
            "TensorRT-RTX has no kernels for it; build with full TensorRT there: "
            "mtlora build-engine MODEL.onnx --runtime tensorrt"
        )
    raise EngineMismatchError(
        f"{plan}: a TensorRT-RTX plan for compute capabilities {', '.join(targets)}, this machine has {gpu}; {fix}"
    )


def check_plan_file(manifest: dict[str, Any], plan: str | Path) -> None:
    """The manifest must describe this very plan (a stale manifest would vouch for the wrong file)."""
    expected = _get(manifest.get("plan"), "sha256")
    if expected and file_sha256(plan) != expected:
        raise WeightsError(f"{plan}: its sha256 does not match {manifest_path(plan).name}; rebuild the plan")
