"""``mtlora build-engine`` as a library call: any source -> the ONNX graph in the wanted precision -> a plan.

The orchestration sits here, above the layers it combines: ``deploy`` exports a run folder, ``calib`` makes the
fp16/bf16/int8 variant of an fp32 graph, and ``engines.tensorrt_build`` (the TensorRT stages) turns the graph into a
plan with TensorRT or TensorRT-RTX. The command's options are ``cli.build_engine``'s. Requirements are checked before
anything is exported or written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from mtlora_deploy.engines.runtimes import parse_targets, pick_runtime
from mtlora_deploy.engines.tensorrt_build import (
    BatchProfile,
    BuildResult,
    BuildSettings,
    build_plan,
    check_build_requirements,
)
from mtlora_deploy.errors import ConfigError, OutputError
from mtlora_deploy.utils.artifacts import CALIBRATED_PRECISIONS, PLAN_SUFFIXES
from mtlora_deploy.utils.onnx_info import detect_onnx_precision, engine_fields


def prepare_onnx(
    source: Path,
    precision: str,
    workdir: Path,
    calib: str | Path | None = None,
    image_size: int | None = None,
    block_size: int | None = None,
    on_write: Callable[[Path, str], None] = lambda path, what: None,
) -> Path:
    """The ONNX graph to build from: ``source`` itself, or exported from a run folder, then turned into the
    ``precision`` variant (AutoCast, PTQ or weight-only quantization via ``mtlora_deploy.calib``) when it is fp32.
    Each graph written on the way (into ``workdir``, beside the plan) is told to ``on_write(path, what it is)``."""
    if source.suffix == ".onnx":
        onnx_path = source
    else:
        from mtlora_deploy.deploy.export import export_onnx

        onnx_path = workdir / f"{_name(source)}.onnx"
        export_onnx(source, onnx_path, image_size=image_size)
        on_write(onnx_path, f"the fp32 graph of {source}")
    have = detect_onnx_precision(onnx_path)
    if have == precision:
        return onnx_path
    if have != "fp32":
        raise ConfigError(f"{onnx_path} is a {have} graph; `precision` {precision} is made from the fp32 export")
    if precision in CALIBRATED_PRECISIONS and calib is None:
        raise ConfigError(f"`precision` {precision} needs `calib` calib/NAME.npz (make one with: mtlora calibrate)")
    from mtlora_deploy.calib.precision import make_precision_variant

    options = {"block_size": block_size} if block_size is not None else {}
    target = workdir / f"{onnx_path.stem}_{precision}.onnx"
    variant = Path(make_precision_variant(onnx_path, precision, target, calib, **options) or target)
    on_write(variant, f"the {precision} graph made from {onnx_path}")
    return variant


def _name(source: Path) -> str:
    """A run folder's name (``runs/demo/train`` -> ``train``), or the file's stem."""
    return source.name if source.is_dir() else source.stem


def build_engine(
    source: str | Path,
    precision: str = "fp16",
    output: str | Path | None = None,
    batch: str | BatchProfile = "1:8:32",
    calib: str | Path | None = None,
    workspace_gib: float | None = None,
    optimization_level: int | None = None,
    timing_cache: str | Path | None = None,
    image_size: int | None = None,
    verbose: bool = False,
    runtime: str = "auto",
    targets: str | tuple[str, ...] | None = None,
    block_size: int | None = None,
    *,
    on_write: Callable[[Path, str], None] = lambda path, what: None,
) -> BuildResult:
    """Build a TensorRT or TensorRT-RTX plan (and its manifest) from an ONNX file or a run/checkpoint folder.

    Args:
        runtime: ``auto`` (TensorRT with a CUDA GPU, else TensorRT-RTX, which builds without a GPU),
            ``tensorrt`` or ``tensorrt-rtx``.
        targets: TensorRT-RTX only: compute capabilities to build for (``"sm86,sm89,sm120"``); default its
            portable set less the targets that cannot run ``precision`` (fp8: sm89, sm120). A target that cannot
            run it is refused before anything is written.
        block_size: int4-wo from an fp32 graph: int4 weights per scale (default 32).
        optimization_level, timing_cache: TensorRT only.
        on_write: told each intermediate ONNX graph written beside the plan (path, what it is).

    Nothing is written unless the runtime (and, for TensorRT, a CUDA GPU that runs ``precision``) is present:
    requirements come first.

    Returns:
        The plan path, the manifest path (``PLAN.json``) and the manifest.
    """
    profile = batch if isinstance(batch, BatchProfile) else BatchProfile.parse(batch)
    wanted = parse_targets(targets) if isinstance(targets, str) or targets is None else tuple(targets)
    source = Path(source)
    if not source.exists():
        raise ConfigError(f"{source} does not exist (expected an .onnx file or a run/checkpoint folder)")
    chosen = pick_runtime(runtime)
    settings = BuildSettings(
        precision,
        profile,
        None if workspace_gib is None else int(workspace_gib * 2**30),
        optimization_level,
        Path(timing_cache) if timing_cache else None,
        verbose,
        chosen,
        wanted,
    )
    suffix = "_rtx" if chosen == "tensorrt-rtx" else ""
    output = Path(output) if output else Path("engines") / f"{_name(source)}_{precision}{suffix}.plan"
    if output.suffix not in PLAN_SUFFIXES:
        raise ConfigError(f"-o: got {output}, expected a .plan (or .engine/.trt) file name")
    check_build_requirements(chosen, precision=precision)
    check_calibration(source, precision, calib, image_size)
    onnx_path = prepare_onnx(source, precision, output.parent, calib, image_size, block_size, on_write)
    with _no_half_written_plan(output):
        return build_plan(onnx_path, output, settings, extra=engine_fields(onnx_path))


def check_calibration(source: Path, precision: str, calib: str | Path | None, image_size: int | None) -> None:
    """An int8 or fp8 build from an fp32 graph or a run folder calibrates: check the set against the model's input
    (key, image size, count, finite values) before anything is exported."""
    if precision not in CALIBRATED_PRECISIONS or calib is None:
        return
    if source.suffix == ".onnx":
        if detect_onnx_precision(source) != "fp32":
            return  # the graph is already quantized; the set is not read
        import onnx

        from mtlora_deploy.calib.precision import graph_input

        name, size = graph_input(onnx.load(str(source), load_external_data=False))
    else:
        from mtlora_deploy.model.checkpoint import read_checkpoint_info

        name, size = "image", image_size or int(read_checkpoint_info(source)["model_config"]["image_size"])
    from mtlora_deploy.calib.dataset import check_calibration_set

    check_calibration_set(calib, name, size)


@contextlib.contextmanager
def _no_half_written_plan(output: Path):
    """The plan and its manifest are written one after the other: when writing the manifest (or the timing cache)
    fails, a plan this call wrote is removed too, so no plan is left without the manifest that vouches for it."""
    before = _signature(output)
    try:
        yield
    except OutputError as exc:
        if output.exists() and _signature(output) != before:
            output.unlink()
            raise OutputError(f"{exc}; the plan {output} written before it was removed") from exc
        raise


def _signature(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None
