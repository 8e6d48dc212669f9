"""``make_precision_variant``: fp32 / fp16 / bf16 / int8 / fp8 / int8-wo / int4-wo ONNX files from the fp32 graph.

TensorRT 11 builds strongly typed networks only, so the precision of every layer is decided here, in
the ONNX graph, and each variant is an ONNX file ONNX Runtime can run on a CPU (bf16 aside: ORT has no
CPU bf16 kernels for MatMul/Add/Conv) so its accuracy is measured without a GPU. The tool and settings
that produced a variant are written into its ``metadata_props``. int8 and fp8 quantize activations and weights
from calibrated ranges (``int8``, ``fp8``); int8-wo and int4-wo quantize only the weights of the fp16 variant
(``weight_only``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import onnx

from mtlora_deploy.calib import autocast, fidelity, fp8, int8, weight_only
from mtlora_deploy.calib.cleanup import topological_sort
from mtlora_deploy.calib.dataset import DEFAULT_MIN_IMAGES, open_calibration
from mtlora_deploy.calib.graph import (
    batched_weight_matmuls,
    count_qdq_nodes,
    head_layers,
    io_dtypes,
    layernorm_input_dtypes,
    select_nodes,
    zero_points_nonzero,
)
from mtlora_deploy.calib.ranges import ArrayReader, RangeSettings, random_images
from mtlora_deploy.calib.tools import CastResult
from mtlora_deploy.deploy.metadata import attach_metadata, metadata_from_proto
from mtlora_deploy.errors import ConfigError, MTLoRAError, WeightsError
from mtlora_deploy.utils.artifacts import CALIBRATED_PRECISIONS, PRECISIONS, WEIGHT_ONLY_PRECISIONS
from mtlora_deploy.utils.atomic import atomic_path
from mtlora_deploy.utils.hashing import file_sha256

TOOLS = ("auto", "modelopt", "onnxruntime")
METADATA_KEYS = (
    "precision",
    "precision_tool",
    "precision_tool_version",
    "precision_settings",
    "precision_high_precision_nodes",
    "precision_source_sha256",
    "calibration",
    "int8_ranges",
    "fp8_ranges",
    "fidelity",
)
# The activation ranges each calibrated precision uses unless told otherwise.
DEFAULT_CALIBRATION_METHODS = {"int8": "entropy", "fp8": fp8.DEFAULT_METHOD}


def pick_tool(tool: str) -> str:
    """``auto`` -> ModelOpt when importable, else ONNX Runtime's converters."""
    if tool not in TOOLS:
        raise ConfigError(f"tool: got {tool!r}, expected one of {', '.join(TOOLS)}")
    if tool != "auto":
        return tool
    return "modelopt" if importlib.util.find_spec("modelopt") is not None else "onnxruntime"


def graph_input(model: onnx.ModelProto) -> tuple[str, int]:
    """(input name, image side) of the single image input ``[N, 3, S, S]``."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise WeightsError(f"expected one graph input (the image), found {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[-1].dim_value:
        raise WeightsError(
            f"graph input '{inputs[0].name}' must be [N, 3, S, S] with a static S (export with a fixed image size)"
        )
    return inputs[0].name, int(dims[-1].dim_value)


def read_precision_metadata(path: str | Path) -> dict[str, Any]:
    """The precision record of a variant (decoded ``mtlora.precision*`` / ``mtlora.calibration`` keys)."""
    metadata = metadata_from_proto(onnx.load(str(path), load_external_data=False))
    return {k: metadata[k] for k in METADATA_KEYS if k in metadata}


def _check_source(source: Path, output: Path, precision: str) -> onnx.ModelProto:
    if precision not in PRECISIONS:
        raise ConfigError(f"got {precision!r}, expected one of {', '.join(PRECISIONS)}", field="precision")
    if not source.is_file():
        raise ConfigError(f"{source} does not exist; export the fp32 graph first (mtlora export)")
    if output.resolve() == source.resolve():
        raise ConfigError(f"`output` {output} is the fp32 source itself; choose another file name", field="output")
    model = onnx.load(str(source))
    made_as = metadata_from_proto(model).get("precision", "fp32")
    if made_as != "fp32" or sum(count_qdq_nodes(model).values()):
        raise ConfigError(f"{source} is already a {made_as} variant; make precision variants from the fp32 export")
    return model


def _images(calibration: Path | None, input_name: str, side: int, min_images: int) -> Any:
    """The calibration images, opened for batch-wise reads (never loaded whole), or random stand-ins."""
    if calibration is not None:
        return open_calibration(calibration, input_name, side, min_images=min_images)
    return random_images((3, side, side))


def _excluded(model: onnx.ModelProto, options: dict[str, Any], batched: bool = True) -> list[str]:
    """The GEMMs left unquantized: ``nodes_to_exclude``, each head's last layer, and (``batched``) the task-batched
    rank-3 weights, which have no per-column int8/fp8 Q/DQ (weight-only dequantizes them per channel all the same)."""
    excluded = select_nodes(model, options["nodes_to_exclude"]) if options["nodes_to_exclude"] else []
    if options["exclude_head_layers"]:
        excluded = [*excluded, *head_layers(model)]
    return sorted({*excluded, *(batched_weight_matmuls(model) if batched else [])})


def _convert_calibrated(
    source: Path,
    model: onnx.ModelProto,
    precision: str,
    tool: str,
    images: Any,
    calibration: Path | None,
    options: dict[str, Any],
) -> tuple[CastResult, dict[str, Any]]:
    """Ranges (cached or one streaming pass, shared by int8 and fp8) -> int8 or fp8 Q/DQ graph; returns it and the
    ranges' record."""
    input_name, side = graph_input(model)
    settings = RangeSettings(method=options["calibration_method"])
    explicit = options["calibration_cache"] is not None
    cache_path = Path(options["calibration_cache"]) if explicit else int8.default_cache_path(source, settings.method)
    cache, reused = int8.calibrated_ranges(
        source,
        images,
        calibration,
        input_name,
        settings,
        cache_path if options["cache"] or explicit else None,
        explicit,
        options["show_progress"],
    )
    excluded = _excluded(model, options)
    if precision == "fp8":
        result = fp8.with_onnxruntime(source, cache.ranges, settings.method, excluded)
    elif tool == "modelopt":
        sample = images[:4] if images is not None else random_images((3, side, side))
        result = int8.with_modelopt(source, input_name, sample, cache.ranges, settings.method, excluded)
    else:
        result = int8.with_onnxruntime(source, cache.ranges, settings.method, excluded, options["per_channel"])
    record = {
        **cache.summary(),
        "cache": str(cache_path) if options["cache"] or explicit else None,
        "reused": reused,
        "calibration": cache.calibration,
    }
    return result, record


def _convert(
    source: Path,
    model: onnx.ModelProto,
    precision: str,
    tool: str,
    images: Any,
    calibration: Path | None,
    options: dict[str, Any],
) -> CastResult:
    input_name = graph_input(model)[0]
    excluded = select_nodes(model, options["nodes_to_exclude"]) if options["nodes_to_exclude"] else []
    keep = tuple(options["keep_fp32_ops"])
    if tool == "modelopt":
        return autocast.with_modelopt(source, precision, keep, excluded, options["data_max"], calibration)
    return autocast.with_onnxruntime(
        source, precision, keep, excluded, options["data_max"], ArrayReader(input_name, images)
    )


def _convert_weight_only(
    source: Path,
    model: onnx.ModelProto,
    precision: str,
    tool: str,
    images: Any,
    calibration: Path | None,
    options: dict[str, Any],
) -> CastResult:
    """The fp16 variant (same rules as ``fp16``), then its GEMM/conv weights in int8 or int4."""
    half = _convert(source, model, "fp16", tool, images, calibration, options)
    excluded = _excluded(model, options, batched=False)
    weights = weight_only.quantize_weights(half.model, precision, excluded, options["block_size"])
    return CastResult(
        weights.model,
        f"{half.tool} + {weights.tool}",
        f"{half.tool_version} + {weights.tool_version}",
        {"fp16": half.settings, "weights": weights.settings},
        sorted({*half.high_precision_nodes, *weights.high_precision_nodes}),
    )


def verify_variant(model: onnx.ModelProto, source: onnx.ModelProto, precision: str, tool: str) -> None:
    """The checks TensorRT and accuracy need: same I/O dtypes, zero points 0, LayerNorm inputs in fp32."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise MTLoRAError(f"the {precision} graph made with {tool} is not valid ONNX: {detail}") from exc
    problems = []
    if io_dtypes(model) != io_dtypes(source):
        problems.append(f"graph I/O dtypes changed from {io_dtypes(source)} to {io_dtypes(model)}")
    if precision not in ("fp32", "fp16", "bf16") and (bad := zero_points_nonzero(model)):
        problems.append(f"{len(bad)} Q/DQ nodes have non-zero zero points (TensorRT refuses them), e.g. {bad[0]}")
    if precision in ("fp16", "bf16", *WEIGHT_ONLY_PRECISIONS):
        low = [n for n, dtype in layernorm_input_dtypes(model).items() if dtype != "float32"]
        if low:
            problems.append(f"{len(low)} LayerNormalization nodes take {precision} inputs, e.g. {low[0]}")
    if problems:
        raise MTLoRAError(
            f"the {precision} graph made with {tool} fails checks: {'; '.join(problems)}; "
            "try the other tool (tool='onnxruntime' or 'modelopt')"
        )


def precision_record(
    source: Path, precision: str, result: CastResult | None, calibration: Path | None, images: int
) -> dict[str, Any]:
    """What made a variant: precision, tool, version, settings, fp32 nodes, source and calibration digests."""
    record: dict[str, Any] = {"precision": precision, "precision_source_sha256": file_sha256(source)}
    if result is not None:
        record.update(
            {
                "precision_tool": result.tool,
                "precision_tool_version": result.tool_version,
                "precision_settings": json.loads(json.dumps(result.settings, default=str)),
                "precision_high_precision_nodes": result.high_precision_nodes,
            }
        )
    if calibration is not None:
        summary = int8.calibration_summary(calibration, images)
        record["calibration"] = {k: summary[k] for k in ("file", "sha256", "images", "split", "array_sha256")}
    return record


def _save(
    model: onnx.ModelProto, source: onnx.ModelProto, record: dict[str, Any], output: Path, fidelity_check: Any = None
) -> None:
    """Keep the exporter's metadata, add the precision record (and the fidelity measured on the written
    file), write atomically."""
    attach_metadata(model, {**metadata_from_proto(source), **record})
    with atomic_path(output) as tmp:
        onnx.save(model, str(tmp))
        if fidelity_check is not None:
            record["fidelity"] = fidelity_check(tmp)
            attach_metadata(model, {**metadata_from_proto(source), **record})
            onnx.save(model, str(tmp))


def _fidelity_check(
    source: Path, model: onnx.ModelProto, precision: str, calibration: Path | None, options: dict[str, Any]
) -> Any:
    """A function ``written file -> fidelity record``, or None when switched off."""
    count = options["fidelity_images"]
    if not count:
        return None
    if precision == "bf16":
        return lambda path: {"skipped": "ONNX Runtime has no CPU bf16 kernels; measure it with TensorRT"}
    metadata = metadata_from_proto(model)
    input_name, side = graph_input(model)
    tasks = metadata.get("tasks") or [o.name for o in model.graph.output]

    def check(path: Path) -> dict[str, Any]:
        holdout = Path(options["holdout"]) if options["holdout"] else None
        images, origin = fidelity.holdout_images(calibration, input_name, side, count, holdout)
        rows = fidelity.measure_fidelity(source, path, images, tasks, metadata.get("outputs", "logits"), precision)
        return fidelity.fidelity_record(rows, origin)

    return check


def make_precision_variant(
    fp32_onnx: str | Path,
    precision: str,
    output: str | Path,
    calibration: str | Path | None = None,
    *,
    tool: str = "auto",
    calibration_method: str | None = None,
    keep_fp32_ops: tuple[str, ...] = autocast.KEEP_FP32_OPS,
    nodes_to_exclude: tuple[str, ...] = (),
    exclude_head_layers: bool = True,
    data_max: float = autocast.DEFAULT_DATA_MAX,
    min_images: int = DEFAULT_MIN_IMAGES,
    calibration_cache: str | Path | None = None,
    cache: bool = True,
    per_channel: bool = True,
    block_size: int = weight_only.DEFAULT_BLOCK_SIZE,
    fidelity_images: int = fidelity.DEFAULT_FIDELITY_IMAGES,
    holdout: str | Path | None = None,
    show_progress: bool = True,
) -> Path:
    """Write the ``precision`` variant of an fp32 ONNX graph to ``output``.

    Args:
        fp32_onnx: the exported fp32 graph (input ``[N, 3, S, S]`` float32, one output per task).
        precision: ``fp32`` (a copy), ``fp16`` / ``bf16`` (mixed precision, I/O stay float32), ``int8`` / ``fp8``
            (Q/DQ of GEMM inputs: activations and weights) or ``int8-wo`` / ``int4-wo`` (the fp16 variant with its
            GEMM/conv weights in int8 per output channel / int4 blocks; no calibration images needed).
        output: the new ``.onnx`` file (written atomically).
        calibration: a ``.npz`` from ``mtlora calibrate``; required for int8 and fp8 (unless ``calibration_cache``
            matches), used by fp16/bf16/weight-only to find nodes that overflow fp16 (random inputs otherwise). Read
            batch by batch: memory does not grow with its image count.
        tool: ``auto`` (ModelOpt when installed, else ONNX Runtime), ``modelopt`` or ``onnxruntime``; fp8 and the
            weight-only formats are always written with ONNX Runtime's quantizer (their fp16 base with ``tool``).
        calibration_method: activation ranges, ``entropy`` (KL), ``max`` or ``percentile``; default entropy for
            int8, max for fp8.
        keep_fp32_ops: op types kept in float32 in fp16/bf16/weight-only graphs.
        nodes_to_exclude: node names, op types or regexes (whole names) kept in float32 / not quantized, on
            top of the automatic ones; one that matches nothing is an error.
        exclude_head_layers: int8/fp8/weight-only: leave each task head's last GEMM/Conv unquantized.
        data_max: fp16/bf16/weight-only: nodes with |output| above this stay float32 (AutoCast's rule).
        min_images: refuse calibration files with fewer images.
        calibration_cache: int8/fp8: the range cache to use (refused when made for another graph, calibration
            set or method) or to create. Default: ``<fp32 stem>.ranges-<method>.json`` beside the graph,
            reused when it matches and recomputed otherwise (int8 and fp8 with one method share it).
        cache: False: neither read nor write the default cache.
        per_channel: int8 weights per output channel (False: one scale per tensor; for comparisons only).
        block_size: int4-wo: int4 weights per scale along the reduction axis (16, 32, 64, 128 or 256).
        fidelity_images: held-out images on which the variant is compared with fp32 per task (0: skip);
            the result goes into the metadata (``fidelity``).
        holdout: a ``.npz`` of held-out images (default: the other split of the calibration set's dataset).
        show_progress: a rich progress bar with ETA during calibration.

    Returns:
        ``output``.
    """
    source, output = Path(fp32_onnx), Path(output)
    model = _check_source(source, output, precision)
    options = {
        "calibration_method": calibration_method or DEFAULT_CALIBRATION_METHODS.get(precision, "entropy"),
        "keep_fp32_ops": keep_fp32_ops,
        "data_max": data_max,
        "nodes_to_exclude": tuple(nodes_to_exclude),
        "exclude_head_layers": exclude_head_layers,
        "calibration_cache": calibration_cache,
        "cache": cache,
        "per_channel": per_channel,
        "block_size": block_size,
        "fidelity_images": fidelity_images,
        "holdout": holdout,
        "show_progress": show_progress,
    }
    _check_options(precision, calibration, options)
    calibration = Path(calibration) if calibration is not None else None
    if precision == "fp32":
        _save(model, model, precision_record(source, "fp32", None, None, 0), output)
        return output
    tool = _tool_for(precision, tool)
    input_name, side = graph_input(model)
    images = _images(calibration, input_name, side, min_images)
    with contextlib.closing(images) if hasattr(images, "close") else contextlib.nullcontext():
        count = len(images)
        result, ranges_record = _convert_variant(source, model, precision, tool, images, calibration, options)
    topological_sort(result.model)
    verify_variant(result.model, model, precision, result.tool)
    record = precision_record(source, precision, result, calibration, count)
    if ranges_record is not None:
        record[f"{precision}_ranges"] = ranges_record
        record.setdefault(
            "calibration",
            {k: ranges_record["calibration"].get(k) for k in ("file", "sha256", "images", "split", "array_sha256")},
        )
    _save(result.model, model, record, output, _fidelity_check(source, model, precision, calibration, options))
    return output


def _check_options(precision: str, calibration: Any, options: dict[str, Any]) -> None:
    """The options ``precision`` needs, checked before any work: a range method and images (or a range cache) for
    int8/fp8, a block size for int4-wo."""
    if precision in CALIBRATED_PRECISIONS:
        int8.check_method(options["calibration_method"])
        if calibration is None and options["calibration_cache"] is None:
            raise ConfigError(
                f"{precision} needs calibration images: pass `calibration` FILE.npz "
                "(draw one with: mtlora calibrate --data DIR --split train -o calib/train.npz)",
                field="calibration",
            )
    if precision == "int4-wo":
        weight_only.check_block_size(options["block_size"])


def _tool_for(precision: str, tool: str) -> str:
    """The tool that writes ``precision``: fp8 is ONNX Runtime's quantizer only (ModelOpt's FP8 path is not wired)."""
    chosen = pick_tool(tool)
    if precision == "fp8" and tool == "modelopt":
        raise ConfigError(
            "tool: fp8 graphs are written with ONNX Runtime's quantizer; use tool='onnxruntime' or 'auto'"
        )
    return "onnxruntime" if precision == "fp8" else chosen


def _convert_variant(
    source: Path,
    model: onnx.ModelProto,
    precision: str,
    tool: str,
    images: Any,
    calibration: Path | None,
    options: dict[str, Any],
) -> tuple[CastResult, dict[str, Any] | None]:
    """The converted graph and, for int8/fp8, the record of the ranges it was made from."""
    if precision in CALIBRATED_PRECISIONS:
        return _convert_calibrated(
            source, model, precision, tool, images if calibration else None, calibration, options
        )
    if precision in WEIGHT_ONLY_PRECISIONS:
        return _convert_weight_only(source, model, precision, tool, images, calibration, options), None
    return _convert(source, model, precision, tool, images, calibration, options), None
