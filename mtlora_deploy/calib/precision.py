"""``make_precision_variant``: fp32 / fp16 / bf16 / int8 ONNX files from the exported fp32 graph.

TensorRT 11 builds strongly typed networks only, so the precision of every layer is decided here, in
the ONNX graph, and each variant is an ONNX file ONNX Runtime can run on a CPU (bf16 aside: ORT has no
CPU bf16 kernels for MatMul/Add/Conv) so its accuracy is measured without a GPU. The tool and settings
that produced a variant are written into its ``metadata_props``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from mtlora_deploy.calib import autocast, int8
from mtlora_deploy.calib.cleanup import topological_sort
from mtlora_deploy.calib.dataset import DEFAULT_MIN_IMAGES, load_calibration, read_provenance
from mtlora_deploy.calib.graph import (
    count_qdq_nodes,
    io_dtypes,
    last_gemm_nodes,
    layernorm_input_dtypes,
    zero_points_nonzero,
)
from mtlora_deploy.calib.ranges import ArrayReader, random_images
from mtlora_deploy.calib.tools import CastResult
from mtlora_deploy.deploy.metadata import attach_metadata, metadata_from_proto
from mtlora_deploy.errors import ConfigError, MTLoRAError, WeightsError
from mtlora_deploy.utils.atomic import atomic_path
from mtlora_deploy.utils.hashing import file_sha256

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
TOOLS = ("auto", "modelopt", "onnxruntime")
METADATA_KEYS = ("precision", "precision_tool", "precision_tool_version", "precision_settings",
                 "precision_high_precision_nodes", "precision_source_sha256", "calibration")


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
        raise WeightsError(f"graph input '{inputs[0].name}' must be [N, 3, S, S] with a static S "
                           "(export with a fixed image size)")
    return inputs[0].name, int(dims[-1].dim_value)


def read_precision_metadata(path: str | Path) -> dict[str, Any]:
    """The precision record of a variant (decoded ``mtlora.precision*`` / ``mtlora.calibration`` keys)."""
    metadata = metadata_from_proto(onnx.load(str(path), load_external_data=False))
    return {k: metadata[k] for k in METADATA_KEYS if k in metadata}


def _check_source(source: Path, output: Path, precision: str) -> onnx.ModelProto:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision: got {precision!r}, expected one of {', '.join(PRECISIONS)}")
    if not source.is_file():
        raise ConfigError(f"{source} does not exist; export the fp32 graph first (mtlora export)")
    if output.resolve() == source.resolve():
        raise ConfigError(f"--output {output} is the fp32 source itself; choose another file name")
    model = onnx.load(str(source))
    made_as = metadata_from_proto(model).get("precision", "fp32")
    if made_as != "fp32" or sum(count_qdq_nodes(model).values()):
        raise ConfigError(f"{source} is already a {made_as} variant; make precision variants from the fp32 export")
    return model


def _images(calibration: Path | None, precision: str, input_name: str, side: int, min_images: int) -> np.ndarray:
    if calibration is not None:
        return load_calibration(calibration, input_name, side, min_images=min_images)
    if precision == "int8":
        raise ConfigError("int8 needs calibration images: pass --calibration FILE.npz "
                          "(draw one with: mtlora calibrate --data DIR --split train -o calib/train.npz)")
    return random_images((3, side, side))


def _convert(source: Path, model: onnx.ModelProto, precision: str, tool: str, images: np.ndarray,
             calibration: Path | None, options: dict[str, Any]) -> CastResult:
    input_name = graph_input(model)[0]
    excluded = list(options["nodes_to_exclude"])
    if precision == "int8":
        if options["exclude_head_layers"]:
            excluded = sorted({*excluded, *last_gemm_nodes(model).values()})
        if tool == "modelopt":
            return int8.with_modelopt(source, input_name, images, options["calibration_method"], excluded)
        return int8.with_onnxruntime(source, ArrayReader(input_name, images), options["calibration_method"], excluded)
    keep = tuple(options["keep_fp32_ops"])
    if tool == "modelopt":
        return autocast.with_modelopt(source, precision, keep, excluded, options["data_max"], calibration)
    return autocast.with_onnxruntime(source, precision, keep, excluded, options["data_max"],
                                     ArrayReader(input_name, images))


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
    if precision == "int8" and (bad := zero_points_nonzero(model)):
        problems.append(f"{len(bad)} Q/DQ nodes have non-zero zero points (TensorRT refuses them), e.g. {bad[0]}")
    if precision in ("fp16", "bf16"):
        low = [n for n, dtype in layernorm_input_dtypes(model).items() if dtype != "float32"]
        if low:
            problems.append(f"{len(low)} LayerNormalization nodes take {precision} inputs, e.g. {low[0]}")
    if problems:
        raise MTLoRAError(f"the {precision} graph made with {tool} fails checks: {'; '.join(problems)}; "
                          "try the other tool (tool='onnxruntime' or 'modelopt')")


def precision_record(source: Path, precision: str, result: CastResult | None, calibration: Path | None,
                     images: int) -> dict[str, Any]:
    """What made a variant: precision, tool, version, settings, fp32 nodes, source and calibration digests."""
    record: dict[str, Any] = {"precision": precision, "precision_source_sha256": file_sha256(source)}
    if result is not None:
        record.update({"precision_tool": result.tool, "precision_tool_version": result.tool_version,
                       "precision_settings": json.loads(json.dumps(result.settings, default=str)),
                       "precision_high_precision_nodes": result.high_precision_nodes})
    if calibration is not None:
        provenance = read_provenance(calibration) or {}
        record["calibration"] = {"file": str(calibration), "sha256": file_sha256(calibration), "images": images,
                                 "split": provenance.get("split"), "array_sha256": provenance.get("array_sha256")}
    return record


def _save(model: onnx.ModelProto, source: onnx.ModelProto, record: dict[str, Any], output: Path) -> None:
    """Keep the exporter's metadata, add the precision record, write atomically."""
    attach_metadata(model, {**metadata_from_proto(source), **record})
    with atomic_path(output) as tmp:
        onnx.save(model, str(tmp))


def make_precision_variant(
    fp32_onnx: str | Path,
    precision: str,
    output: str | Path,
    calibration: str | Path | None = None,
    *,
    tool: str = "auto",
    calibration_method: str = "entropy",
    keep_fp32_ops: tuple[str, ...] = autocast.KEEP_FP32_OPS,
    nodes_to_exclude: tuple[str, ...] = (),
    exclude_head_layers: bool = True,
    data_max: float = autocast.DEFAULT_DATA_MAX,
    min_images: int = DEFAULT_MIN_IMAGES,
) -> Path:
    """Write the ``precision`` variant of an fp32 ONNX graph to ``output``.

    Args:
        fp32_onnx: the exported fp32 graph (input ``[N, 3, S, S]`` float32, one output per task).
        precision: ``fp32`` (a copy), ``fp16`` / ``bf16`` (mixed precision, I/O stay float32) or ``int8``.
        output: the new ``.onnx`` file (written atomically).
        calibration: a ``.npz`` from ``mtlora calibrate``; required for int8, used by fp16/bf16 to find
            nodes that overflow (random inputs otherwise).
        tool: ``auto`` (ModelOpt when installed, else ONNX Runtime), ``modelopt`` or ``onnxruntime``.
        calibration_method: int8 activation ranges, ``entropy`` (KL) or ``max``.
        keep_fp32_ops: op types kept in float32 in fp16/bf16 graphs.
        nodes_to_exclude: exact node names kept in float32 / not quantized, on top of the automatic ones.
        exclude_head_layers: int8 only: leave each task head's last GEMM/Conv unquantized.
        data_max: fp16/bf16: nodes with |output| above this stay float32 (AutoCast's rule).
        min_images: refuse calibration files with fewer images.

    Returns:
        ``output``.
    """
    source, output = Path(fp32_onnx), Path(output)
    model = _check_source(source, output, precision)
    if precision == "int8":
        int8.check_method(calibration_method)
    calibration = Path(calibration) if calibration is not None else None
    if precision == "fp32":
        _save(model, model, precision_record(source, "fp32", None, None, 0), output)
        return output
    tool = pick_tool(tool)
    input_name, side = graph_input(model)
    images = _images(calibration, precision, input_name, side, min_images)
    options = {"calibration_method": calibration_method, "keep_fp32_ops": keep_fp32_ops, "data_max": data_max,
               "nodes_to_exclude": nodes_to_exclude, "exclude_head_layers": exclude_head_layers}
    result = _convert(source, model, precision, tool, images, calibration, options)
    topological_sort(result.model)
    verify_variant(result.model, model, precision, result.tool)
    _save(result.model, model, precision_record(source, precision, result, calibration, len(images)), output)
    return output
