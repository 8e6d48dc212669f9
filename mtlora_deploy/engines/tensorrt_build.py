"""The TensorRT build stages, shared by both flavours (TensorRT and TensorRT-RTX): ONNX -> plan + JSON manifest.

Small stages in the Polygraphy manner, each a function taking the imported runtime module as ``trt``: network from
ONNX -> builder config -> engine bytes -> plan file. Precision is a property of the ONNX graph (TensorRT 11 and
TensorRT-RTX build strongly typed networks), so an fp16/bf16/int8 engine is built from the matching ONNX variant,
never with builder precision flags or a calibrator. Making that variant (export, AutoCast, PTQ) is the caller's job
(``mtlora_deploy.engine_pipeline``); this module never imports ``deploy`` or ``calib``. Requirements are checked
before anything is written, and a failed build leaves no file behind.
"""

from __future__ import annotations

import hashlib
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mtlora_deploy.engines.manifest import build_manifest, probe_environment, write_manifest
from mtlora_deploy.engines.plan_layers import layer_summary, precision_notes
from mtlora_deploy.engines.runtimes import (
    FLAVOURS,
    RTX_DEFAULT_TARGETS,
    TENSORRT,
    TENSORRT_RTX,
    capture_log,
    check_precision_gpu,
    check_precision_targets,
    default_targets,
    dtype_name,
    flavour,
    load_runtime,
    network_flags,
    runtime_of,
    shared_logger,
    target_enum,
)
from mtlora_deploy.errors import ConfigError, MTLoRAError
from mtlora_deploy.utils.artifacts import PLAN_SUFFIXES, PRECISIONS
from mtlora_deploy.utils.atomic import write_bytes_atomic
from mtlora_deploy.utils.hashing import file_sha256
from mtlora_deploy.utils.locking import update_file_locked

TIMING_CACHE_NAME = "timing.cache"
DEFAULT_OPTIMIZATION_LEVEL = 3


class EngineBuildError(MTLoRAError):
    """TensorRT could not parse the graph or build an engine from it."""


@dataclass
class BuildResult:
    """What a build wrote: the plan, its manifest file, and the manifest's content."""

    plan: Path
    manifest_path: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class BatchProfile:
    """The one optimization profile: the batch sizes the engine accepts (min..max) and is tuned for (opt)."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(f"got {self.min}:{self.opt}:{self.max}, expected 1 <= MIN <= OPT <= MAX", field="batch")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``"1:8:32"`` -> BatchProfile(1, 8, 32); a single number ``"8"`` means a fixed batch."""
        try:
            values = [int(v) for v in str(text).split(":")]
        except ValueError as exc:
            raise ConfigError(f"got {text!r}, expected MIN:OPT:MAX such as 1:8:32", field="batch") from exc
        if len(values) == 1:
            values *= 3
        if len(values) != 3:
            raise ConfigError(f"got {text!r}, expected MIN:OPT:MAX such as 1:8:32", field="batch")
        return cls(*values)


@dataclass
class BuildSettings:
    """Builder settings that end up in the manifest."""

    precision: str
    batch: BatchProfile = field(default_factory=BatchProfile)
    workspace_bytes: int | None = None  # None: the runtime's own default (TensorRT: the GPU's memory), as trtexec
    optimization_level: int | None = None
    timing_cache: Path | None = None
    verbose: bool = False
    runtime: str = TENSORRT
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"got {self.precision!r}, expected one of {', '.join(PRECISIONS)}", field="precision")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise ConfigError(
                f"got {self.optimization_level}, expected 0..5 (3 is TensorRT's default)", field="optimization_level"
            )
        if self.workspace_bytes is not None and self.workspace_bytes <= 0:
            raise ConfigError(
                f"got {self.workspace_bytes / 2**30:g} GiB, expected a positive size", field="workspace_bytes"
            )
        self._check_runtime_options()

    def _check_runtime_options(self) -> None:
        """Options of one flavour are refused on the other, never silently ignored."""
        spec = flavour(self.runtime)
        if self.optimization_level is not None and not spec.has_optimization_level:
            raise ConfigError(
                f"{spec.title} has no builder optimization level (it picks kernels when the plan is loaded); "
                "drop the option or use `runtime` tensorrt",
                field="optimization_level",
            )
        if self.timing_cache is not None and not spec.has_timing_cache:
            raise ConfigError(
                f"{spec.title} has no timing cache (its timing-cache calls are no-ops "
                "since 1.2; compiled kernels go to the runtime cache PLAN.rtxcache when the plan runs); "
                "drop the option or use `runtime` tensorrt",
                field="timing_cache",
            )
        if self.targets and not spec.has_targets:
            raise ConfigError(
                f"{spec.title} builds for the GPU it runs on; target compute capabilities "
                "are a TensorRT-RTX option (`runtime` tensorrt-rtx)",
                field="targets",
            )
        if spec.has_targets:
            check_precision_targets(self.precision, self.plan_targets)

    @property
    def level(self) -> int:
        return DEFAULT_OPTIMIZATION_LEVEL if self.optimization_level is None else self.optimization_level

    @property
    def plan_targets(self) -> tuple[str, ...]:
        """TensorRT-RTX: the compute capabilities the plan is for: ``targets``, else the portable default set less
        those that cannot run the precision (fp8: sm89, sm120)."""
        return self.targets or default_targets(self.precision)

    @property
    def targets_source(self) -> str:
        if self.targets:
            return "given"
        return "TensorRT-RTX default" if self.plan_targets == RTX_DEFAULT_TARGETS else f"default for {self.precision}"


def check_build_requirements(runtime: str = TENSORRT, device: str = "cuda", precision: str | None = None):
    """The runtime importable and, for TensorRT (which builds for the GPU it runs on), a CUDA GPU present that runs
    ``precision``, or a one-line error naming what is missing and how to fix it. TensorRT-RTX builds without a GPU
    (its targets are checked with the settings)."""
    trt = load_runtime(runtime)
    if FLAVOURS[runtime].needs_gpu_to_build:
        from mtlora_deploy.engines.tensorrt import require_cuda  # torch: not needed to parse a --batch profile

        require_cuda(device, runtime)
        if precision is not None:
            env = probe_environment(runtime=runtime, runtime_version=trt.__version__)
            check_precision_gpu(precision, env["compute_capability"], env["gpu_name"])
    return trt


# -- stage 1: network from ONNX ----------------------------------------------------------------------------------
def format_parser_error(error) -> str:
    """One ONNX parser error as ``Op node 'name': description``."""
    return f"{error.node_operator() or '?'} node '{error.node_name() or error.node()}': {error.desc()}"


def network_from_onnx(trt, logger, onnx_path: Path) -> tuple[Any, Any, Any]:
    """(builder, network, parser) for a strongly typed network parsed from ``onnx_path`` (external data is read
    from beside it). Every parser error is reported, not just the first."""
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    errors = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
    if not ok or errors:
        detail = "; ".join(errors) or "no details (is it a valid ONNX file?)"
        raise EngineBuildError(
            f"{onnx_path}: the {FLAVOURS[runtime_of(trt)].title} ONNX parser rejected the graph, "
            f"{len(errors)} error(s): {detail}"
        )
    return builder, network, parser


def network_io(trt, network) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Names, shapes (-1 = dynamic) and dtypes of the network's inputs and outputs, for the manifest."""

    def describe(tensor) -> dict[str, Any]:
        return {"name": tensor.name, "shape": [int(d) for d in tensor.shape], "dtype": dtype_name(trt, tensor.dtype)}

    inputs = [describe(network.get_input(i)) for i in range(network.num_inputs)]
    return inputs, [describe(network.get_output(i)) for i in range(network.num_outputs)]


# -- stage 2: builder config -------------------------------------------------------------------------------------
def optimization_profile(builder, network, batch: BatchProfile):
    """One profile: every input's batch axis from ``batch``; the other axes must be static (fixed H/W at export)."""
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(int(d) for d in tensor.shape)[1:]
        if any(d < 0 for d in rest):
            raise ConfigError(
                f"input '{tensor.name}' has dynamic axes {tuple(tensor.shape)} beyond the batch; "
                "export with a fixed image size (mtlora export --image-size N)"
            )
        profile.set_shape(tensor.name, (batch.min, *rest), (batch.opt, *rest), (batch.max, *rest))
    return profile


def create_config(trt, builder, network, settings: BuildSettings, cache_bytes: bytes = b""):
    """Workspace limit, DETAILED profiling verbosity and the batch profile; then TensorRT's optimization level and
    timing cache, or TensorRT-RTX's target compute capabilities."""
    config = builder.create_builder_config()
    if settings.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.add_optimization_profile(optimization_profile(builder, network, settings.batch))
    if settings.runtime == TENSORRT_RTX:
        set_targets(trt, config, settings.plan_targets if settings.plan_targets != RTX_DEFAULT_TARGETS else ())
        return config
    config.builder_optimization_level = settings.level
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False):
        warnings.warn(
            "the timing cache file was made by another TensorRT version or GPU; starting a new one", stacklevel=2
        )
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return config


def set_targets(trt, config, targets: tuple[str, ...]) -> None:
    """TensorRT-RTX: build for ``targets`` (compute capabilities such as "8.9"); none keeps its portable default."""
    if not targets:
        return
    enums = [target_enum(trt, t) for t in targets]
    config.num_compute_capabilities = len(enums)
    for i, value in enumerate(enums):
        config.set_compute_capability(value, i)


# -- stage 3: engine bytes and the timing cache ------------------------------------------------------------------
# Two ways a build fails for want of workspace: a scratch allocation above the pool, and no tactic fitting in it.
_OUT_OF_WORKSPACE = re.compile(r"OutOfMemory \(Requested size was (\d+) bytes|within workspace limit")


def engine_bytes(
    builder, network, config, errors: list[str] | None = None, workspace_bytes: int | None = None, max_batch: int = 0
) -> bytes:
    """The serialized plan, or an error with the builder's own error messages (``errors``, from ``capture_log``).

    Running out of the workspace pool (``workspace_bytes``; the full Swin-T at 448 needs more than 4 GiB at batch
    32) is said as such, with the two ways out, instead of the builder's "OutOfMemory" with RAM to spare.
    """
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = errors or []
        found = next((m for e in reversed(errors) if (m := _OUT_OF_WORKSPACE.search(e))), None)
        if found is not None and workspace_bytes:
            at = f" at max batch {max_batch}" if max_batch else ""
            asked = f", asking for {int(found.group(1)) / 2**30:.2f} GiB" if found.group(1) else ""
            raise EngineBuildError(
                f"the builder could not build an engine: it ran out of its workspace pool "
                f"({workspace_bytes / 2**30:.3g} GiB){at}{asked}; raise `workspace_bytes` (or leave it to the "
                "runtime's default) or lower the max batch of `batch`"
            )
        detail = "; ".join(errors[-3:]) or "see the builder's log (`verbose`)"
        raise EngineBuildError(f"the builder could not build an engine: {detail}")
    return bytes(serialized)


def merged_timing_cache(config, previous: bytes) -> bytes:
    """This build's timing cache combined with the file's current content (another build may have added to it)."""
    cache = config.get_timing_cache()
    if previous and not cache.combine(config.create_timing_cache(previous), False):
        warnings.warn(
            "the existing timing cache was made by another TensorRT version or GPU; replacing it", stacklevel=2
        )
    return bytes(cache.serialize())


def save_timing_cache(config, path: Path) -> bytes:
    """Merge this build's timing cache into ``path`` under a file lock, re-reading the file when saving: a build
    that finished meanwhile and wrote to it loses nothing."""
    return update_file_locked(path, lambda current: merged_timing_cache(config, current))


# -- stage 4: plan + manifest ------------------------------------------------------------------------------------
def build_plan(
    onnx_path: str | Path, output: str | Path, settings: BuildSettings, extra: dict[str, Any] | None = None
) -> BuildResult:
    """Build ``output`` (a .plan) from ``onnx_path``; write the plan, (TensorRT) the timing cache and ``output.json``.

    Args:
        onnx_path: a strongly typed ONNX graph in the wanted precision.
        output: the plan file to write (atomically).
        settings: builder settings (runtime, precision, batch profile, workspace, optimization level or targets,
            timing cache).
        extra: more manifest fields (tasks, image size, ONNX metadata).

    Returns:
        The plan path, the manifest path and the manifest.
    """
    onnx_path, output = Path(onnx_path), Path(output)
    if output.suffix not in PLAN_SUFFIXES:
        raise ConfigError(f"-o: got {output}, expected a .plan (or .engine/.trt) file name")
    trt = check_build_requirements(settings.runtime, precision=settings.precision)
    start = time.perf_counter()
    cache_path = _timing_cache_path(settings, output)
    previous = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    with capture_log(trt, settings.verbose) as log:
        builder, network, _parser = network_from_onnx(trt, shared_logger(trt), onnx_path)
        config = create_config(trt, builder, network, settings, previous)
        workspace = config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE)
        plan = engine_bytes(builder, network, config, log.errors, workspace, settings.batch.max)
    elapsed = time.perf_counter() - start
    inputs, outputs = network_io(trt, network)
    summary = layer_summary(log.layers)
    notes = precision_notes(settings.runtime, settings.precision, summary)
    if settings.runtime == TENSORRT_RTX and settings.precision == "int8":
        warnings.warn(notes[0], stacklevel=2)
    write_bytes_atomic(output, plan)
    if cache_path is not None:
        save_timing_cache(config, cache_path)
    fields = {
        "plan_bytes": plan,
        "inputs": inputs,
        "outputs": outputs,
        "elapsed": elapsed,
        "cache_path": cache_path,
        "layer_summary": summary,
        "notes": notes,
        "workspace_bytes": workspace,
    }
    manifest = _manifest(trt, settings, onnx_path, output, fields, dict(extra or {}))
    return BuildResult(output, write_manifest(output, manifest), manifest)


def _timing_cache_path(settings: BuildSettings, output: Path) -> Path | None:
    if not FLAVOURS[settings.runtime].has_timing_cache:
        return None
    return Path(settings.timing_cache or output.parent / TIMING_CACHE_NAME)


def _manifest(
    trt, settings: BuildSettings, onnx_path: Path, output: Path, built: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    rtx = settings.runtime == TENSORRT_RTX
    env = probe_environment(runtime=settings.runtime, runtime_version=trt.__version__)
    if rtx:  # built ahead of time: the build machine's GPU (if any) says nothing about where the plan runs
        env.update(gpu_name=None, compute_capability=None)
    inputs, outputs, plan = built["inputs"], built["outputs"], built["plan_bytes"]
    tasks = extra.pop("tasks", None) or [o["name"] for o in outputs]
    image_size = extra.pop("image_size", None) or (inputs[0]["shape"][-1] if inputs else None)
    builder: dict[str, Any] = {
        "workspace_bytes": built["workspace_bytes"],
        "workspace_source": "given" if settings.workspace_bytes is not None else f"{trt.__name__} default",
        "profiling_verbosity": "DETAILED",
        "strongly_typed": True,
    }
    if rtx:
        builder["targets_source"] = settings.targets_source
    else:
        builder.update(optimization_level=settings.level, timing_cache=str(built["cache_path"]))
    targets = {"target_compute_capabilities": list(settings.plan_targets)} if rtx else {}
    return build_manifest(
        env,
        **targets,
        precision=settings.precision,
        precision_notes=built["notes"],
        layer_summary=built["layer_summary"],
        batch_profile=asdict(settings.batch),
        tasks=list(tasks),
        image_size=image_size,
        inputs=inputs,
        outputs=outputs,
        onnx={"path": str(onnx_path), "sha256": file_sha256(onnx_path)},
        plan={"file": output.name, "bytes": len(plan), "sha256": hashlib.sha256(plan).hexdigest()},
        builder=builder,
        build_time_s=round(built["elapsed"], 3),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    )
