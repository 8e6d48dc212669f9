"""The Pareto plot of a comparison: delta-m against trainable parameters (log x), the non-dominated rows joined."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtlora_deploy.utils.atomic import atomic_path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (fewer or equal parameters AND higher or equal delta-m,
    one of them strictly), sorted by parameters."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((ox <= x and oy >= y) and (ox < x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_pareto(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Write the PNG: one labelled point per row with a delta-m, the Pareto front as a line."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["delta_m_vs_single_task"] is not None and r["trainable_params"] > 0]
    points = [(float(r["trainable_params"]), float(r["delta_m_vs_single_task"])) for r in shown]
    fig, ax = plt.subplots(figsize=(8, 5))
    for row, (x, y) in zip(shown, points, strict=True):
        marker = "s" if row["kind"] == "single-task" else "o"
        ax.scatter([x], [y], marker=marker, s=40, zorder=3)
        ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            "--",
            color="grey",
            zorder=2,
            label="Pareto front",
        )
        ax.legend(fontsize=8, loc="lower right")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters (log scale)", ylabel="Δm vs single-task (%)", title=title)
    ax.grid(True, alpha=0.3, which="both")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
