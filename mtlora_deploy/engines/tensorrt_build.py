"""``mtlora build-engine`` as a library: ONNX (or a run folder) -> TensorRT plan + JSON manifest.

Small stages in the Polygraphy manner, each a function: network from ONNX -> builder config -> engine bytes ->
plan file. Precision is a property of the ONNX graph (TensorRT 11 is strongly typed only), so an fp16/bf16/int8
engine is built from the matching ONNX variant, never with builder precision flags or a TensorRT calibrator.
Requirements (tensorrt importable, a CUDA GPU) are checked before anything is written.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mtlora_deploy.engines.manifest import build_manifest, probe_environment, write_manifest
from mtlora_deploy.engines.tensorrt import dtype_name, load_tensorrt, make_logger, network_flags, require_cuda
from mtlora_deploy.errors import ConfigError, MTLoRAError
from mtlora_deploy.utils.atomic import write_bytes_atomic
from mtlora_deploy.utils.hashing import file_sha256

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
TIMING_CACHE_NAME = "timing.cache"


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
            raise ConfigError(f"--batch: got {self.min}:{self.opt}:{self.max}, expected 1 <= MIN <= OPT <= MAX")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``"1:8:32"`` -> BatchProfile(1, 8, 32); a single number ``"8"`` means a fixed batch."""
        try:
            values = [int(v) for v in str(text).split(":")]
        except ValueError as exc:
            raise ConfigError(f"--batch: got {text!r}, expected MIN:OPT:MAX such as 1:8:32") from exc
        if len(values) == 1:
            values *= 3
        if len(values) != 3:
            raise ConfigError(f"--batch: got {text!r}, expected MIN:OPT:MAX such as 1:8:32")
        return cls(*values)


@dataclass
class BuildSettings:
    """Builder settings that end up in the manifest."""

    precision: str
    batch: BatchProfile = field(default_factory=BatchProfile)
    workspace_bytes: int = 4 << 30
    optimization_level: int = 3
    timing_cache: Path | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision: got {self.precision!r}, expected one of {', '.join(PRECISIONS)}")
        if not 0 <= self.optimization_level <= 5:
            raise ConfigError(f"--opt-level: got {self.optimization_level}, expected 0..5 (3 is TensorRT's default)")
        if self.workspace_bytes <= 0:
            raise ConfigError(f"--workspace-gib: got {self.workspace_bytes / 2**30:g}, expected a positive size")


def check_build_requirements(device: str = "cuda"):
    """TensorRT importable and a CUDA GPU present, or a one-line error naming what is missing and how to fix it."""
    trt = load_tensorrt()
    require_cuda(device)
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
        raise EngineBuildError(f"{onnx_path}: the TensorRT ONNX parser reported {len(errors)} error(s): "
                               + ("; ".join(errors) or "no details (is it a valid ONNX file?)"))
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
            raise ConfigError(f"input '{tensor.name}' has dynamic axes {tuple(tensor.shape)} beyond the batch; "
                              "export with a fixed image size (mtlora export --image-size N)")
        profile.set_shape(tensor.name, (batch.min, *rest), (batch.opt, *rest), (batch.max, *rest))
    return profile


def create_config(trt, builder, network, settings: BuildSettings, cache_bytes: bytes):
    """Workspace limit, optimization level, DETAILED profiling verbosity, the batch profile and the timing cache."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    config.builder_optimization_level = settings.optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.add_optimization_profile(optimization_profile(builder, network, settings.batch))
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False):
        warnings.warn("the timing cache file was made by another TensorRT version or GPU; starting a new one",
                      stacklevel=2)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return config


# -- stage 3: engine bytes and the timing cache ------------------------------------------------------------------
def engine_bytes(builder, network, config) -> bytes:
    """The serialized plan, or an error pointing at TensorRT's log."""
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError("TensorRT could not build an engine (see the TensorRT log above; try --verbose)")
    return bytes(serialized)


def merged_timing_cache(config, previous: bytes) -> bytes:
    """This build's timing cache combined with the file's current content (another build may have added to it)."""
    cache = config.get_timing_cache()
    if previous and not cache.combine(config.create_timing_cache(previous), False):
        warnings.warn("the existing timing cache was made by another TensorRT version or GPU; replacing it",
                      stacklevel=2)
    return bytes(cache.serialize())


# -- stage 4: plan + manifest ------------------------------------------------------------------------------------
def build_plan(onnx_path: str | Path, output: str | Path, settings: BuildSettings,
               extra: dict[str, Any] | None = None) -> BuildResult:
    """Build ``output`` (a .plan) from ``onnx_path``; write the plan, the timing cache and ``output.json``.

    Args:
        onnx_path: a strongly typed ONNX graph in the wanted precision.
        output: the plan file to write (atomically).
        settings: builder settings (precision, batch profile, workspace, optimization level, timing cache).
        extra: more manifest fields (tasks, image size, ONNX metadata).

    Returns:
        The plan path, the manifest path and the manifest.
    """
    trt = check_build_requirements()
    onnx_path, output = Path(onnx_path), Path(output)
    cache_path = Path(settings.timing_cache or output.parent / TIMING_CACHE_NAME)
    previous = cache_path.read_bytes() if cache_path.is_file() else b""
    start = time.perf_counter()
    builder, network, _parser = network_from_onnx(trt, make_logger(trt, settings.verbose), onnx_path)
    config = create_config(trt, builder, network, settings, previous)
    plan = engine_bytes(builder, network, config)
    elapsed = time.perf_counter() - start
    inputs, outputs = network_io(trt, network)
    write_bytes_atomic(output, plan)
    write_bytes_atomic(cache_path, merged_timing_cache(config, previous))
    manifest = _manifest(trt, settings, onnx_path, output, plan, inputs, outputs, elapsed, cache_path, extra or {})
    return BuildResult(output, write_manifest(output, manifest), manifest)


def _manifest(trt, settings, onnx_path, output, plan, inputs, outputs, elapsed, cache_path, extra) -> dict[str, Any]:
    import hashlib

    env = probe_environment(tensorrt_version=trt.__version__)
    tasks = extra.pop("tasks", None) or [o["name"] for o in outputs]
    image_size = extra.pop("image_size", None) or (inputs[0]["shape"][-1] if inputs else None)
    builder = {"workspace_bytes": settings.workspace_bytes, "optimization_level": settings.optimization_level,
               "profiling_verbosity": "DETAILED", "strongly_typed": True, "timing_cache": str(cache_path)}
    return build_manifest(
        env, precision=settings.precision, batch_profile=asdict(settings.batch), tasks=list(tasks),
        image_size=image_size, inputs=inputs, outputs=outputs,
        onnx={"path": str(onnx_path), "sha256": file_sha256(onnx_path)},
        plan={"file": output.name, "bytes": len(plan), "sha256": hashlib.sha256(plan).hexdigest()},
        builder=builder, build_time_s=round(elapsed, 3),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
    )


# -- the command: any source -> ONNX in the wanted precision -> plan ---------------------------------------------
def detect_onnx_precision(path: str | Path) -> str:
    """fp32, fp16, bf16 or int8, from the graph's metadata or content (Q/DQ nodes, 16-bit float initializers)."""
    import onnx

    from mtlora_deploy.deploy.metadata import metadata_from_proto

    model = onnx.load(str(path), load_external_data=False)
    declared = metadata_from_proto(model).get("precision")
    if declared in PRECISIONS:
        return declared
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return "int8"
    types = {t.data_type for t in model.graph.initializer}
    types |= {a.i for n in model.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    if onnx.TensorProto.FLOAT16 in types:
        return "fp16"
    return "bf16" if onnx.TensorProto.BFLOAT16 in types else "fp32"


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The export's metadata (tasks, classes, image size, model config...); raw ``metadata_props`` (JSON-decoded
    where possible) for a graph this toolkit did not export."""
    from mtlora_deploy.deploy.metadata import read_onnx_metadata

    try:
        return dict(read_onnx_metadata(path))
    except ConfigError:
        return _raw_metadata(path)


def _raw_metadata(path: str | Path) -> dict[str, Any]:
    import json

    import onnx

    out: dict[str, Any] = {}
    for prop in onnx.load(str(path), load_external_data=False).metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except ValueError:
            out[prop.key] = prop.value
    return out


def _manifest_fields(onnx_path: Path) -> dict[str, Any]:
    meta = onnx_metadata(onnx_path)
    tasks = meta.get("tasks")
    tasks = [t for t in tasks.split(",") if t] if isinstance(tasks, str) else tasks
    size = meta.get("image_size") or meta.get("input_size")
    size = size[-1] if isinstance(size, (list, tuple)) else size
    return {"tasks": tasks, "image_size": int(size) if size else None, "onnx_metadata": meta}


def prepare_onnx(source: Path, precision: str, workdir: Path, calib: str | Path | None = None,
                 image_size: int | None = None) -> Path:
    """The ONNX graph to build from: ``source`` itself, or exported from a run folder, then turned into the
    ``precision`` variant (ModelOpt AutoCast / PTQ via ``mtlora_deploy.calib``) when it is fp32."""
    if source.suffix == ".onnx":
        onnx_path = source
    else:
        from mtlora_deploy.deploy.export import export_onnx

        onnx_path = workdir / f"{_name(source)}.onnx"
        export_onnx(source, onnx_path, image_size=image_size)
    have = detect_onnx_precision(onnx_path)
    if have == precision:
        return onnx_path
    if have != "fp32":
        raise ConfigError(f"{onnx_path} is a {have} graph; --precision {precision} is made from the fp32 export")
    if precision == "int8" and calib is None:
        raise ConfigError("--precision int8 needs --calib calib/NAME.npz (make one with: mtlora calibrate)")
    from mtlora_deploy.calib.precision import make_precision_variant

    variant = workdir / f"{onnx_path.stem}_{precision}.onnx"
    return Path(make_precision_variant(onnx_path, precision, variant, calib) or variant)


def _name(source: Path) -> str:
    """A run folder's name (``runs/demo/train`` -> ``train``), or the file's stem."""
    return source.name if source.is_dir() else source.stem


def build_engine(
    source: str | Path,
    precision: str = "fp16",
    output: str | Path | None = None,
    batch: str | BatchProfile = "1:8:32",
    calib: str | Path | None = None,
    workspace_gib: float = 4.0,
    optimization_level: int = 3,
    timing_cache: str | Path | None = None,
    image_size: int | None = None,
    verbose: bool = False,
) -> BuildResult:
    """Build a TensorRT plan (and its manifest) from an ONNX file or a run/checkpoint folder.

    Nothing is written unless TensorRT and a CUDA GPU are present: requirements are checked first.

    Returns:
        The plan path, the manifest path (``PLAN.json``) and the manifest.
    """
    profile = batch if isinstance(batch, BatchProfile) else BatchProfile.parse(batch)
    settings = BuildSettings(precision, profile, int(workspace_gib * 2**30), optimization_level,
                             Path(timing_cache) if timing_cache else None, verbose)
    source = Path(source)
    if not source.exists():
        raise ConfigError(f"{source} does not exist (expected an .onnx file or a run/checkpoint folder)")
    output = Path(output) if output else Path("engines") / f"{_name(source)}_{precision}.plan"
    if output.suffix not in (".plan", ".engine", ".trt"):
        raise ConfigError(f"-o: got {output}, expected a .plan (or .engine/.trt) file name")
    check_build_requirements()
    onnx_path = prepare_onnx(source, precision, output.parent, calib, image_size)
    return build_plan(onnx_path, output, settings, extra=_manifest_fields(onnx_path))
