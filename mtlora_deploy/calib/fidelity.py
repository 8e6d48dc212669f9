"""Fidelity of a precision variant: how closely it reproduces the fp32 graph, per task, on held-out images.

The numbers users act on are the task decisions, not raw logits: the share of pixels whose class
(argmax) is unchanged for segmentation, whose side of the 0.5 probability (logit sign) is unchanged
for saliency / edges, and the mean angle between the fp32 and variant normal vectors. The held-out
images are never calibration images: by default a seeded draw from the other split of the dataset the
calibration set came from (its provenance names it).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlora_deploy.calib.dataset import choose_ids, load_images, open_calibration, read_provenance
from mtlora_deploy.calib.ranges import cpu_session, random_images
from mtlora_deploy.deploy.postprocess import CLASS_TASKS, NORMAL_TASKS
from mtlora_deploy.trainer.metrics.saliency import SaliencyMeter
from mtlora_deploy.utils.imports import require

DEFAULT_FIDELITY_IMAGES = 8
# The goals of issue 12 (segmentation-style agreement in %, normals in degrees), per precision; the formats of issue
# 24 (8 bits or fewer) share int8's.
AGREEMENT_GOALS = {"int8": 99.0, "fp8": 99.0, "int8-wo": 99.0, "int4-wo": 99.0, "fp16": 99.9, "bf16": 99.9}
ANGLE_GOAL_DEGREES = 1.0


@dataclass(frozen=True)
class TaskFidelity:
    """One task's agreement with fp32: ``metric`` is ``argmax agreement`` / ``sign agreement`` (%, higher is
    better) or ``mean angle`` (degrees, lower is better); ``max_relative`` = max |variant - fp32| / max |fp32|;
    for sign tasks ``maxF_difference``: the fp32 graph's maxF minus the variant's (percentage points; the
    evaluation's saliency maxF), both scored against the fp32 graph's own mask (probability >= 0.5) for want of
    labels: 0 when the variant decides as fp32 does."""

    task: str
    metric: str
    value: float
    goal: float
    max_relative: float
    maxF_difference: float | None = None  # noqa: N815 (the metric's name)

    @property
    def ok(self) -> bool:
        return self.value <= self.goal if self.metric == "mean angle" else self.value >= self.goal


def task_metric(task: str) -> str:
    """What the fidelity of ``task`` is measured by."""
    if task in CLASS_TASKS:
        return "argmax agreement"
    if task in NORMAL_TASKS:
        return "mean angle"
    return "sign agreement"  # SIGMOID_TASKS (sal, edge)


class FidelityMeter:
    """Accumulates per-task agreement counts over batches (fixed memory, like the calibration pass)."""

    def __init__(self, tasks: list[str], outputs: str) -> None:
        self.tasks, self.outputs = tasks, outputs
        self.sums = {t: 0.0 for t in tasks}
        self.counts = {t: 0 for t in tasks}
        self.max_abs = {t: 0.0 for t in tasks}
        self.ref_max = {t: 0.0 for t in tasks}
        self.saliency = {t: (SaliencyMeter(), SaliencyMeter()) for t in tasks if task_metric(t) == "sign agreement"}

    def update(self, reference: dict[str, np.ndarray], variant: dict[str, np.ndarray]) -> None:
        """Add one batch of both graphs' outputs (``{task: [B, C, H, W]}``)."""
        for task in self.tasks:
            ref, out = reference[task].astype(np.float32), variant[task].astype(np.float32)
            self.max_abs[task] = max(self.max_abs[task], float(np.abs(out - ref).max(initial=0)))
            self.ref_max[task] = max(self.ref_max[task], float(np.abs(ref).max(initial=0)))
            matched, count = self._compare(task, ref, out)
            self.sums[task] += matched
            self.counts[task] += count
            if task in self.saliency:
                ref_logits, out_logits, mask = self._saliency_inputs(ref, out)
                self.saliency[task][0].update(ref_logits, mask)
                self.saliency[task][1].update(out_logits, mask)

    def _compare(self, task: str, ref: np.ndarray, out: np.ndarray) -> tuple[float, int]:
        metric = task_metric(task)
        if metric == "mean angle":
            unit = [x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in (ref, out)]
            cosine = np.clip((unit[0] * unit[1]).sum(axis=1), -1.0, 1.0)
            return float(np.degrees(np.arccos(cosine)).sum()), cosine.size
        if metric == "argmax agreement":
            labels = [x[:, 0] if x.shape[1] == 1 else x.argmax(axis=1) for x in (ref, out)]
            return float((labels[0] == labels[1]).sum()), labels[0].size
        cut = 0.5 if self.outputs == "labels" else 0.0  # probabilities in labels mode, logits otherwise
        return float(((ref > cut) == (out > cut)).sum()), ref.size

    def _saliency_inputs(self, ref: np.ndarray, out: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Both graphs' logits and the fp32 mask (probability >= 0.5) for the saliency meters."""
        if self.outputs == "labels":  # probabilities: back to logits for the meter's sigmoid
            ref, out = (np.log(np.clip(x, 1e-7, 1 - 1e-7) / np.clip(1 - x, 1e-7, 1)) for x in (ref, out))
        return torch.from_numpy(ref), torch.from_numpy(out), torch.from_numpy((ref >= 0).astype(np.float32))

    def result(self, precision: str) -> list[TaskFidelity]:
        rows = []
        for task in self.tasks:
            metric = task_metric(task)
            mean = self.sums[task] / max(self.counts[task], 1)
            value = mean if metric == "mean angle" else 100.0 * mean
            goal = ANGLE_GOAL_DEGREES if metric == "mean angle" else AGREEMENT_GOALS.get(precision, 99.0)
            relative = self.max_abs[task] / self.ref_max[task] if self.ref_max[task] > 0 else self.max_abs[task]
            max_f = None
            if task in self.saliency:
                max_f = self.saliency[task][0].compute()["maxF"] - self.saliency[task][1].compute()["maxF"]
            rows.append(TaskFidelity(task, metric, value, goal, relative, max_f))
        return rows


def holdout_images(
    calibration: Path | None, input_name: str, side: int, count: int, holdout: Path | None = None
) -> tuple[Any, dict[str, Any]]:
    """``count`` images never used for calibration and where they came from.

    ``holdout`` (a ``.npz`` from ``mtlora calibrate --split val``) wins; else the other split of the
    dataset named in the calibration file's provenance (seed 0); else standard-normal stand-ins.
    """
    if holdout is not None:
        images = open_calibration(holdout, input_name, side, min_images=1)
        with contextlib.closing(images):
            count = min(count, len(images))
            return images[:count], {"source": str(holdout), "images": count}
    provenance = read_provenance(calibration) if calibration is not None else None
    if provenance and provenance.get("dataset_root"):
        from mtlora_deploy.trainer.data.layout import PascalLayout
        from mtlora_deploy.trainer.data.pascal import read_split

        layout = PascalLayout(Path(provenance["dataset_root"]))
        split = "val" if provenance.get("split") != "val" else "train"
        if layout.split_file(split).is_file():
            used = set(provenance.get("ids", []))
            ids = [i for i in read_split(layout, split) if i not in used]
            ids = choose_ids(ids, min(count, len(ids)), 0)
            return load_images(layout, ids, side), {
                "source": str(layout.root),
                "split": split,
                "seed": 0,
                "images": len(ids),
            }
    return random_images((3, side, side), count=count, seed=1), {"source": "random normal inputs", "images": count}


def measure_fidelity(
    fp32_path: str | Path,
    variant_path: str | Path,
    images: np.ndarray,
    tasks: list[str],
    outputs: str,
    precision: str,
    batch: int = 2,
) -> list[TaskFidelity]:
    """Run ``images`` through both graphs on ONNX Runtime CPU, batch by batch; one row per task."""
    ort = require("onnxruntime")
    sessions = [cpu_session(ort, str(p)) for p in (fp32_path, variant_path)]  # no arena: two graphs at once
    input_name = sessions[0].get_inputs()[0].name
    meter = FidelityMeter(tasks, outputs)
    for start in range(0, len(images), batch):
        feed = {input_name: np.ascontiguousarray(images[start : start + batch], dtype=np.float32)}
        ref, out = (dict(zip(tasks, s.run(tasks, feed), strict=False)) for s in sessions)
        meter.update(ref, out)
    return meter.result(precision)


def fidelity_record(rows: list[TaskFidelity], source: dict[str, Any]) -> dict[str, Any]:
    """The JSON stored under ``mtlora.fidelity`` in the variant's metadata."""
    return {
        "reference": "fp32 graph, ONNX Runtime CPU",
        "images": source,
        "tasks": {r.task: {k: v for k, v in asdict(r).items() if k != "task"} | {"ok": r.ok} for r in rows},
    }


def fidelity_table(precision: str, record: dict[str, Any]):
    """A rich table of a ``fidelity`` metadata record: one row per task, value, goal, max relative error."""
    from rich.table import Table

    images = record.get("images", {})
    where = images.get("split", "") and f"{images['split']} split of "
    table = Table(
        title=f"{precision} vs fp32 (ONNX Runtime CPU) on {images.get('images', '?')} held-out images "
        f"({where}{images.get('source', '?')})"
    )
    for name in ("task", "metric", "value", "goal", "max rel. error", "ok"):
        table.add_column(name, justify="left" if name in ("task", "metric") else "right")
    for task, row in record.get("tasks", {}).items():
        unit, better = ("deg", "<=") if row["metric"] == "mean angle" else ("%", ">=")
        table.add_row(
            task,
            row["metric"],
            f"{row['value']:.3f} {unit}",
            f"{better} {row['goal']:g} {unit}",
            f"{row['max_relative']:.2e}",
            "[green]yes[/green]" if row["ok"] else "[red]no[/red]",
        )
    max_f = [
        f"{t} maxF {row['maxF_difference']:+.3f} points"
        for t, row in record.get("tasks", {}).items()
        if row.get("maxF_difference") is not None
    ]
    if max_f:  # a caption, not a column: the table stays within 80 columns
        table.caption = "fp32 minus variant: " + ", ".join(max_f)
    return table
