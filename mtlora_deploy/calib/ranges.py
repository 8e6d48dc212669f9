"""Activation statistics of an fp32 graph on calibration images, through ONNX Runtime on the CPU.

Both the fp16 range check (which nodes overflow fp16) and the int8 ranges feed images through the same
small reader, one batch at a time. ``collect_ranges`` is the int8 calibration: ONNX Runtime's
``quantize_static`` (and its calibrators) keep every batch's activations until the end (~1.4 GB per
image for Swin-T at 448), so the ranges are computed here in one streaming pass (running max, or ONNX
Runtime's own merging histograms) and handed to the quantizer as a calibration cache.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mtlora_deploy.calib.graph import GEMM_OPS
from mtlora_deploy.errors import ConfigError, DataError
from mtlora_deploy.utils.imports import require

# Histogram methods pull every calibrated tensor out of the session (~1.5 GB per image for Swin-T at 448) and
# even max needs the forward's activations: one image in flight keeps the peak lowest; on a CPU, batching
# hardly raises throughput.
DEFAULT_CALIBRATION_BATCH = 1


class ArrayReader:
    """An ONNX Runtime ``CalibrationDataReader`` over an in-memory ``[N, ...]`` array, ``batch`` images at a time.

    Duck-typed (``get_next`` / ``rewind``) so this module imports without onnxruntime; ORT only calls these.
    """

    def __init__(self, input_name: str, images: np.ndarray, batch: int = DEFAULT_CALIBRATION_BATCH) -> None:
        self.input_name, self.images, self.batch, self.position = input_name, images, max(1, int(batch)), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.images):
            return None
        chunk = self.images[self.position : self.position + self.batch]
        self.position += self.batch
        return {self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self) -> None:
        self.position = 0

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch)


def random_images(shape: tuple[int, ...], count: int = 4, seed: int = 0) -> np.ndarray:
    """Standard-normal stand-ins for normalised images, used only when no calibration file is given."""
    return np.random.default_rng(seed).standard_normal((count, *shape), dtype=np.float32)


def float_tensors(model: onnx.ModelProto) -> list[str]:
    """Every float32 tensor the graph computes (shape inference only finds them: its shapes may carry an exporter's
    bogus symbolic dims)."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    values = [*inferred.value_info, *inferred.output]
    return list(dict.fromkeys(v.name for v in values if v.type.tensor_type.elem_type == TensorProto.FLOAT))


def absmax_graph(model: onnx.ModelProto, tensors: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose only outputs are ``max |t|`` (a scalar) of each of ``tensors``; their names.

    Each reduction sits right after the node making its tensor, so that a session running nodes in this order
    (``cpu_session``) frees the tensor as soon as its own consumers are done. ONNX Runtime's MinMax calibrator
    does the same edit but quadratically in the node count.
    """
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    graph = augmented.graph
    names = {name: f"mtlora_absmax_{index}" for index, name in enumerate(tensors)}

    def reductions(produced) -> list[onnx.NodeProto]:
        return [
            node
            for name in produced
            if name in names
            for node in (
                helper.make_node("Abs", [name], [f"{names[name]}_abs"]),
                helper.make_node("ReduceMax", [f"{names[name]}_abs"], [names[name]], keepdims=0),
            )
        ]

    nodes = reductions([*(i.name for i in graph.input), *(i.name for i in graph.initializer)])
    for node in model.graph.node:
        nodes += [node, *reductions(node.output)]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(names[t], TensorProto.FLOAT, []) for t in tensors)
    return augmented, [names[t] for t in tensors]


def cpu_session(ort: Any, graph: bytes | str) -> Any:
    """A CPU session that frees each tensor when done: no arena (it keeps its high-water mark, rounded up), and
    the priority-based order, which runs each reduction right after its tensor is made (the default order batches
    them: 4.7 GB instead of 2.0 GB for one Swin-T 448 image; a plain forward takes 1.6 GB)."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def activation_max_abs(model_path: str | Path, reader: ArrayReader) -> dict[str, float]:
    """``{tensor: max |value|}`` over every float32 tensor of the graph, for the images ``reader`` yields.

    Only scalar reductions leave the session, and each tensor is freed once reduced: memory stays at one forward.
    """
    ort = require("onnxruntime")
    model = onnx.load(str(model_path))
    tensors = float_tensors(model)
    augmented, outputs = absmax_graph(model, tensors)
    del model
    session = cpu_session(ort, augmented.SerializeToString())
    del augmented
    found = dict.fromkeys(tensors, 0.0)
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        for name, value in zip(tensors, session.run(outputs, feed), strict=True):
            found[name] = max(found[name], float(value))
    return found


RANGE_METHODS = ("entropy", "max", "percentile")


@dataclass(frozen=True)
class RangeSettings:
    """How activation ranges are computed (recorded in the cache and the graph's metadata).

    Attributes:
        method: ``max`` (running max |x|), ``entropy`` (TensorRT's KL threshold on a histogram) or
            ``percentile`` (the ``percentile``-th percentile of |x|).
        num_bins: histogram bins (entropy / percentile); the histogram widens with fixed bin width
            when a later batch exceeds its range (ONNX Runtime's ``HistogramCollector``).
        num_quantized_bins: int8 levels the entropy search quantizes to.
        percentile: for ``percentile``.
        batch: images per session run (``None``: 1; the peak grows with it, throughput on a CPU hardly).
    """

    method: str = "entropy"
    num_bins: int = 2048
    num_quantized_bins: int = 128
    percentile: float = 99.99
    batch: int | None = None

    def __post_init__(self) -> None:
        if self.method not in RANGE_METHODS:
            raise ConfigError(
                f"got {self.method!r}, expected one of {', '.join(RANGE_METHODS)}", field="calibration_method"
            )
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"percentile: got {self.percentile}, expected a value in (0, 100]")

    @property
    def images_per_run(self) -> int:
        return int(self.batch or DEFAULT_CALIBRATION_BATCH)

    def to_dict(self) -> dict[str, Any]:
        """The settings that change the result (``batch`` does not, up to float rounding)."""
        record: dict[str, Any] = {"method": self.method}
        if self.method != "max":
            record["num_bins"] = self.num_bins
        if self.method == "entropy":
            record["num_quantized_bins"] = self.num_quantized_bins
        if self.method == "percentile":
            record["percentile"] = self.percentile
        return record


def gemm_activation_inputs(model: onnx.ModelProto, op_types: tuple[str, ...] = GEMM_OPS) -> list[str]:
    """The tensors Q/DQ scales are needed for: data inputs of MatMul/Gemm/Conv that are not initializers.

    Weights (initializers) get per-channel scales from their own values; everything else a GEMM reads
    (activations, a shared weight forwarded through Identity) needs a calibrated range.
    """
    initializers = {i.name for i in model.graph.initializer}
    names = [
        name
        for node in model.graph.node
        if node.op_type in op_types
        for name in node.input[:2]
        if name and name not in initializers
    ]
    return list(dict.fromkeys(names))


def _augmented(model: onnx.ModelProto, tensors: list[str], reduce: bool) -> tuple[bytes, list[str]]:
    """The graph with each tensor (or its ``max |x|`` when ``reduce``) as its only outputs; their names."""
    if reduce:
        augmented, outputs = absmax_graph(model, tensors)
        return augmented.SerializeToString(), outputs
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    del augmented.graph.output[:]  # only the calibrated tensors leave the session
    augmented.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    return augmented.SerializeToString(), list(tensors)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("images"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=True,
    )


def _run_batches(
    session: Any, outputs: list[str], reader: ArrayReader, update: Any, description: str, show_progress: bool
) -> int:
    """Feed ``reader`` batch by batch, hand each batch's outputs to ``update``; returns the image count."""
    seen, start = 0, time.perf_counter()
    reader.rewind()
    with _progress() if show_progress else contextlib.nullcontext() as bar:
        task = bar.add_task(description, total=len(reader.images), rate="") if bar else None
        while (feed := reader.get_next()) is not None:
            update(outputs, session.run(outputs, feed))
            seen += len(next(iter(feed.values())))
            if bar:
                bar.update(task, completed=seen, rate=f"{(time.perf_counter() - start) / seen:.2f} s/image")
    if seen == 0:
        raise DataError("calibration: no images to calibrate on")
    return seen


def collect_ranges(
    model_path: str | Path,
    images: Any,
    input_name: str,
    settings: RangeSettings,
    tensors: list[str] | None = None,
    show_progress: bool = True,
) -> dict[str, tuple[float, float]]:
    """``{tensor: (low, high)}`` symmetric int8 ranges of the GEMM inputs, updated batch by batch.

    Peak memory is one session run (one batch of the calibrated tensors for histogram methods, scalars
    for max) plus fixed-size histograms: it does not grow with the number of images. ``images`` is an
    ``[N, 3, S, S]`` array or :class:`~mtlora_deploy.calib.dataset.NpzImages` (read slice by slice).
    """
    ort = require("onnxruntime")
    model = onnx.load(str(model_path))
    tensors = tensors if tensors is not None else gemm_activation_inputs(model)
    reduce = settings.method == "max"
    graph, outputs = _augmented(model, tensors, reduce)
    del model
    session = cpu_session(ort, graph)
    del graph
    reader = ArrayReader(input_name, images, settings.images_per_run)
    if reduce:
        found = dict.fromkeys(outputs, 0.0)

        def update(names, values):
            for name, value in zip(names, values, strict=False):
                found[name] = max(found[name], float(value))

        _run_batches(session, outputs, reader, update, "calibrating (max)", show_progress)
        return {t: (-found[o], found[o]) for t, o in zip(tensors, outputs, strict=False)}
    return _histogram_ranges(session, outputs, reader, settings, show_progress)


def _histogram_ranges(
    session: Any, outputs: list[str], reader: ArrayReader, settings: RangeSettings, show_progress: bool
) -> dict[str, tuple[float, float]]:
    """Entropy / percentile thresholds from ONNX Runtime's own streaming ``HistogramCollector``."""
    calibrate = require("onnxruntime.quantization.calibrate")
    collector = calibrate.HistogramCollector(
        method=settings.method,
        symmetric=True,
        num_bins=settings.num_bins,
        num_quantized_bins=settings.num_quantized_bins,
        percentile=settings.percentile,
        scenario="same",
    )

    def update(names, values):
        with contextlib.redirect_stdout(io.StringIO()):  # the collector prints a line per call
            for name, value in zip(names, values, strict=False):
                collector.collect({name: value})

    _run_batches(session, outputs, reader, update, f"calibrating ({settings.method})", show_progress)
    if settings.method == "entropy":
        thresholds = {
            name: entropy_threshold(histogram, settings.num_quantized_bins)
            for name, histogram in collector.histogram_dict.items()
        }
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            thresholds = collector.compute_collection_result()
    ranges = {}
    for name, value in thresholds.items():
        bound = max(abs(float(value[0])), abs(float(value[1])))
        ranges[name] = (-bound, bound)
    return ranges


def entropy_threshold(histogram: tuple, num_quantized_bins: int) -> tuple[float, float]:
    """TensorRT's KL-divergence threshold search on a merged histogram, exactly as ONNX Runtime's
    ``HistogramCollector.get_entropy_threshold`` computes it (same candidates, rounding, smoothing and
    tie-break) but with array sums instead of Python loops: ~100x faster, which matters with hundreds of
    tensors and 2048+ bins (minutes per graph otherwise).

    Args:
        histogram: ``(counts, edges, min, max, ...)`` over ``[-t, t]`` as the collector keeps it.
        num_quantized_bins: int8 levels (128).
    """
    hist, edges = np.asarray(histogram[0], dtype=np.int64), histogram[1]
    zero, half = hist.size // 2, num_quantized_bins // 2
    cumulative = np.concatenate([[0], np.cumsum(hist)])
    best, best_bounds = np.inf, None
    for i in range(half, zero + 1):
        start, end = zero - i, min(zero + i + 1, hist.size)
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += cumulative[start]
        p[-1] += cumulative[-1] - cumulative[end]
        merged = sliced.size // num_quantized_bins
        body = merged * num_quantized_bins
        quantized = sliced[:body].reshape(num_quantized_bins, merged).sum(axis=1)
        quantized[-1] += sliced[body:].sum()
        norm = (p[:body] != 0).reshape(num_quantized_bins, merged).sum(axis=1)
        q = np.zeros(p.size, dtype=np.int64)
        q[:body] = np.repeat(np.where(norm != 0, quantized / np.maximum(norm, 1), 0).astype(np.int64), merged)
        div = _kl_smoothed(p, q)
        if div < best or best_bounds is None:
            best, best_bounds = div, (edges[start], edges[end])
    low, high = best_bounds
    return max(float(low), float(histogram[2])), min(float(high), float(histogram[3]))


def _smooth(p: np.ndarray, eps: float = 0.0001) -> np.ndarray | None:
    """ONNX Runtime's ``smooth_distribution`` in float32: zeros get ``eps``, the rest give it back."""
    zeros = p == 0
    n_zeros = float(zeros.sum(dtype=np.float32))
    n_nonzeros = p.size - n_zeros
    if not n_nonzeros:
        return None
    eps1 = eps * n_zeros / n_nonzeros
    return p.astype(np.float32) + np.where(zeros, np.float32(eps), np.float32(-eps1))


def _kl_smoothed(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of the smoothed, normalised distributions in float32 (ONNX Runtime's ``entropy``)."""
    p_s, q_s = _smooth(p), _smooth(q)
    if p_s is None or q_s is None:
        return np.inf
    p_s = 1.0 * p_s / np.sum(p_s)
    q_s = 1.0 * q_s / np.sum(q_s)
    return float(np.sum(p_s * np.log(p_s / q_s)))
