"""PNG plots of a profile (matplotlib, Agg backend: no display needed): latency per image and throughput against
batch size (log axis, 95% intervals), achieved GFLOP/s per variant, accuracy vs latency."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtlora_deploy.utils.atomic import atomic_path

PLOTTED_ROLES = ("single_pass", "merged", "bare_backbone", "file", "per_task")


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def _lines(measurements: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in measurements:
        if m["role"] in PLOTTED_ROLES:
            lines[f"{m['backend']} | {Path(str(m['source'])).name} | {m['role']} | {m['precision']}"].append(m)
    for points in lines.values():
        points.sort(key=lambda m: m["batch"])
    return dict(sorted(lines.items()))


def _per_batch_plot(measurements, path, ylabel: str, title: str, value, bounds) -> Path:
    """One line per backend x variant against the batch size (log2 axis), the 95% interval as error bars."""
    plt = pyplot()
    lines = _lines(measurements)
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, points in lines.items():
        values = [value(p) for p in points]
        low_high = [bounds(p) for p in points]
        errors = [  # each median lies inside its interval (stats): never a negative bar
            [v - lo for v, (lo, _) in zip(values, low_high, strict=True)],
            [hi - v for v, (_, hi) in zip(values, low_high, strict=True)],
        ]
        ax.errorbar([p["batch"] for p in points], values, yerr=errors, marker="o", capsize=3, label=label)
    ax.set(xlabel="batch size", ylabel=ylabel, title=title)
    ax.set_xscale("log", base=2)
    batches = sorted({m["batch"] for points in lines.values() for m in points})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    path = _save(fig, Path(path))
    plt.close(fig)
    return path


def _interval(m: dict[str, Any]) -> tuple[float, float]:
    low, high = m["ci_low_ms"], m["ci_high_ms"]
    return (m["median_ms"], m["median_ms"]) if low is None or high is None else (low, high)


def plot_latency_per_image(measurements: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Median latency per image (ms) against batch size, with the median's 95% interval."""
    return _per_batch_plot(
        measurements,
        path,
        "latency per image (ms, median over rounds, 95% interval)",
        "Latency per image vs batch size",
        lambda m: m["median_ms"] / m["batch"],
        lambda m: tuple(v / m["batch"] for v in _interval(m)),
    )


def plot_throughput_vs_batch(measurements: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Images per second (at the median) against batch size, the interval from the median's."""

    def bounds(m):
        low, high = _interval(m)
        return m["batch"] * 1000.0 / high, m["batch"] * 1000.0 / low

    return _per_batch_plot(
        measurements,
        path,
        "images/s (at the median over rounds, 95% interval)",
        "Throughput vs batch size",
        lambda m: m["throughput_images_per_s"],
        bounds,
    )


def plot_gflops_per_variant(measurements: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Achieved GFLOP/s (2 x GMAC per image x images/s) per variant, one bar per batch size."""
    plt = pyplot()
    rows = [m for m in measurements if m.get("gflops_per_s") is not None]
    labels = list(
        dict.fromkeys(f"{m['backend']} {m['precision']} {Path(str(m['source'])).name} [{m['role']}]" for m in rows)
    )
    batches = sorted({m["batch"] for m in rows})
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.35 * len(labels) * max(1, len(batches)) + 1)))
    height = 0.8 / max(1, len(batches))
    for j, batch in enumerate(batches):
        values = {
            f"{m['backend']} {m['precision']} {Path(str(m['source'])).name} [{m['role']}]": m["gflops_per_s"]
            for m in rows
            if m["batch"] == batch
        }
        ax.barh(
            [i + j * height for i in range(len(labels))],
            [values.get(label, 0.0) for label in labels],
            height=height,
            label=f"batch {batch}",
        )
    ax.set_yticks([i + height * (len(batches) - 1) / 2 for i in range(len(labels))], labels, fontsize=7)
    ax.set(xlabel="achieved GFLOP/s (2 x GMAC/image x images/s)", title="Achieved GFLOP/s per variant")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7)
    path = _save(fig, Path(path))
    plt.close(fig)
    return path


def accuracy_points(metrics: Sequence[dict[str, Any]], measurements: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair each ``mtlora evaluate`` result with the profile measurement of the same artefact (smallest batch)."""
    from mtlora_deploy.trainer.delta import read_delta

    points = []
    for record in metrics:
        artefact = Path(str(record.get("artefact", ""))).resolve()
        matches = [
            m
            for m in measurements
            if m["role"] in ("file", "single_pass", "merged") and Path(str(m["source"])).resolve() == artefact
        ]
        delta, baseline = read_delta(record)
        if not matches or delta is None:
            continue
        best = min(matches, key=lambda m: (m["batch"], m["median_ms"]))
        points.append(
            {
                "artefact": str(artefact),
                "backend": best["backend"],
                "precision": best["precision"],
                "batch": best["batch"],
                "latency_ms": best["median_ms"],
                "delta_m": delta,
                "delta_m_vs": baseline.label,
            }
        )
    return points


def plot_accuracy_vs_latency(points: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """delta-m (%) against median latency, one marker per artefact, labelled with its precision and backend."""
    plt = pyplot()
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
    against = sorted({p.get("delta_m_vs", "baseline not recorded") for p in points})
    ax.set(
        xlabel=f"latency (ms, median, batch {','.join(map(str, batches))})",
        ylabel="delta-m (%)\nvs " + "; ".join(against),
        title="Accuracy vs latency per precision",
    )
    ax.grid(True, alpha=0.3)
    path = _save(fig, Path(path))
    plt.close(fig)
    return path
