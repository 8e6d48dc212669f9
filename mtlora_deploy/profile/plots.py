"""PNG plots of a profile (matplotlib, Agg backend: no display needed): latency vs batch, accuracy vs latency."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtlora_deploy.utils.atomic import atomic_path

PLOTTED_ROLES = ("single_pass", "merged", "bare_backbone", "file", "per_task")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_latency_vs_batch(measurements: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Median latency (ms, p90 as the error bar's top) against batch size, one line per backend x variant."""
    plt = _pyplot()
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in measurements:
        if m["role"] in PLOTTED_ROLES:
            lines[f"{m['backend']} | {Path(str(m['source'])).name} | {m['role']} | {m['precision']}"].append(m)
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, points in sorted(lines.items()):
        points.sort(key=lambda m: m["batch"])
        median = [p["latency_ms"]["median"] for p in points]
        spread = [p["latency_ms"]["p90"] - p["latency_ms"]["median"] for p in points]
        ax.errorbar(
            [p["batch"] for p in points], median, yerr=[[0] * len(points), spread], marker="o", capsize=3, label=label
        )
    ax.set(xlabel="batch size", ylabel="latency per batch (ms, median; bar to p90)", title="Latency vs batch size")
    ax.set_xscale("log", base=2)
    batches = sorted({m["batch"] for points in lines.values() for m in points})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    path = _save(fig, Path(path))
    plt.close(fig)
    return path


def accuracy_points(metrics: Sequence[dict[str, Any]], measurements: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair each ``mtlora evaluate`` result with the profile measurement of the same artefact (smallest batch)."""
    points = []
    for record in metrics:
        artefact = Path(str(record.get("artefact", ""))).resolve()
        matches = [
            m
            for m in measurements
            if m["role"] in ("file", "single_pass", "merged") and Path(str(m["source"])).resolve() == artefact
        ]
        if not matches or record.get("delta_m") is None:
            continue
        best = min(matches, key=lambda m: (m["batch"], m["latency_ms"]["median"]))
        points.append(
            {
                "artefact": str(artefact),
                "backend": best["backend"],
                "precision": best["precision"],
                "batch": best["batch"],
                "latency_ms": best["latency_ms"]["median"],
                "delta_m": record["delta_m"],
            }
        )
    return points


def plot_accuracy_vs_latency(points: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """delta-m (%) against median latency, one marker per artefact, labelled with its precision and backend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for point in points:
        ax.scatter(point["latency_ms"], point["delta_m"], s=40)
        ax.annotate(
            f"{point['precision']} ({point['backend']})",
            (point["latency_ms"], point["delta_m"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )
    batches = sorted({p["batch"] for p in points})
    ax.set(
        xlabel=f"latency (ms, median, batch {','.join(map(str, batches))})",
        ylabel="delta-m (%)",
        title="Accuracy vs latency per precision",
    )
    ax.grid(True, alpha=0.3)
    path = _save(fig, Path(path))
    plt.close(fig)
    return path
