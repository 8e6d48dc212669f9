"""Served load: closed-loop clients (each sends its next request when the last is answered) or an open-loop steady
rate, latency percentiles, errors, and the batch sizes Triton's dynamic batcher formed (from its statistics).

Each client thread has its own HTTP connection. Throughput counts answers: the time from the first request to the
last answer is cut into equal windows (rounds), ``profile.stats.median_interval`` gives the 95% interval over the
per-window throughputs, and the point value is the median of those windows, the statistic the interval is about.
Latencies are measured from the moment a request was due (open loop: its scheduled time), so a client that falls
behind is not hidden.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlora_deploy.serve.client import InferenceError, Input, TritonClient
from mtlora_deploy.serve.repository import BYTES_INPUT, model_names
from mtlora_deploy.utils.atomic import atomic_path, write_json_atomic
from mtlora_deploy.utils.tables import markdown_table

PERCENTILES = (50, 95, 99)
LOAD_COLUMNS = (
    "clients",
    "requests",
    "errors",
    "throughput /s [95% interval]",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "mean batch",
)


@dataclass
class Sample:
    """What one run of load recorded: per request its due time, latency (s) and error (or None)."""

    started: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, due: float, latency: float, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.started.append(due)
                self.latencies.append(latency)
            else:
                self.errors.append(error)


def _send(client: TritonClient, model: str, data: bytes, sample: Sample, due: float) -> None:
    try:
        client.infer(model, [Input(BYTES_INPUT, [data])])
        sample.add(due, time.perf_counter() - due, None)
    except (InferenceError, OSError) as exc:
        sample.add(due, time.perf_counter() - due, str(exc)[:200])


def closed_loop(url: str, model: str, data: bytes, clients: int, duration: float) -> Sample:
    """``clients`` threads, each sending one request after another for ``duration`` seconds."""
    sample, deadline = Sample(), time.perf_counter() + duration

    def run() -> None:
        client = TritonClient(url)
        while time.perf_counter() < deadline:
            _send(client, model, data, sample, time.perf_counter())
        client.close()

    _run_threads([threading.Thread(target=run) for _ in range(clients)])
    return sample


def open_loop(url: str, model: str, data: bytes, rate: float, duration: float, workers: int = 32) -> Sample:
    """Requests due at a steady ``rate`` per second for ``duration`` seconds, sent by up to ``workers`` threads."""
    sample, start, count = Sample(), time.perf_counter() + 0.05, int(rate * duration)
    next_index, lock = [0], threading.Lock()

    def run() -> None:
        client = TritonClient(url)
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= count:
                break
            due = start + index / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            _send(client, model, data, sample, due)
        client.close()

    _run_threads([threading.Thread(target=run) for _ in range(workers)])
    return sample


def _run_threads(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def summarize(sample: Sample, rounds: int = 5) -> dict[str, Any]:
    """Requests, errors, throughput (answers per second: the median over ``rounds`` equal windows from the first
    request to the last answer, with its 95% interval) and latency percentiles in ms."""
    from mtlora_deploy.profile.stats import median_interval

    origin = min(sample.started) if sample.started else 0.0
    done = np.asarray(sample.started) + np.asarray(sample.latencies) - origin
    edges = np.linspace(0.0, float(done.max()) if done.size else 1.0, rounds + 1)
    edges[-1] += 1e-9  # the last answer falls inside the last window
    per_round = [float(np.sum((done >= a) & (done < b)) / (b - a)) for a, b in zip(edges, edges[1:], strict=False)]
    latencies = np.asarray(sample.latencies) * 1e3
    low, high = median_interval(per_round) if done.size > 1 else (None, None)
    return {
        "requests": len(sample.latencies),
        "errors": len(sample.errors),
        "first_error": sample.errors[0] if sample.errors else None,
        "throughput_per_s": float(np.median(per_round)),
        "throughput_interval": [low, high],
        "throughput_rounds": per_round,
        "latency_ms": {f"p{p}": float(np.percentile(latencies, p)) if latencies.size else None for p in PERCENTILES},
    }


def batch_executions(before: dict, after: dict) -> dict[int, int]:
    """Executions per batch size between two statistics snapshots of one model (Triton's ``batch_stats``)."""

    def counts(stats: dict) -> dict[int, int]:
        return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}

    old, new = counts(before), counts(after)
    return {size: new[size] - old.get(size, 0) for size in sorted(new) if new[size] - old.get(size, 0) > 0}


def mean_batch(executions: dict[int, int]) -> float | None:
    total = sum(executions.values())
    return sum(size * n for size, n in executions.items()) / total if total else None


def measure(
    url: str, ensemble: str, model_step: str, data: bytes, concurrency: tuple[int, ...], duration: float
) -> list[dict[str, Any]]:
    """One closed-loop run per client count: its summary and the batch sizes the model step ran."""
    client, rows = TritonClient(url), []
    _send(client, ensemble, data, Sample(), time.perf_counter())  # warm: first request loads lazily in some backends
    for clients in concurrency:
        before = client.statistics(model_step)
        sample = closed_loop(url, ensemble, data, clients, duration)
        executions = batch_executions(before, client.statistics(model_step))
        rows.append(
            {
                "clients": clients,
                **summarize(sample),
                "batch_executions": executions,
                "mean_batch": mean_batch(executions),
            }
        )
    client.close()
    return rows


def bench_serve(
    url: str,
    image: str | Path,
    output: str | Path,
    concurrency: tuple[int, ...] = (1, 4, 16),
    duration: float = 5.0,
    served_model: str | None = None,
) -> dict[str, Any]:
    """``mtlora bench-serve``: measure the served ensemble at each client count; write ``bench_serve.json`` and
    ``bench_serve.md`` into ``output``; returns the report."""
    import platform

    from mtlora_deploy.serve.predict import served_ensemble

    client = TritonClient(url)
    ensemble, _ = served_ensemble(client, served_model)
    client.close()
    model_step = model_names(ensemble)["model"]
    data = Path(image).read_bytes()
    report = {
        "settings": {
            "server": url,
            "ensemble": ensemble,
            "model_step": model_step,
            "image": str(image),
            "image_bytes": len(data),
            "concurrency": list(concurrency),
            "duration_s": duration,
            "mode": "closed loop (each client sends its next request when the last is answered)",
            "client_machine": f"{platform.node()} ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})",
        },
        "results": measure(url, ensemble, model_step, data, tuple(concurrency), duration),
    }
    output = Path(output)
    write_json_atomic(output / "bench_serve.json", report)
    with atomic_path(output / "bench_serve.md") as tmp:
        tmp.write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, settings first."""
    s = report["settings"]
    rows = []
    for row in report["results"]:
        low, high = row["throughput_interval"]
        throughput = f"{row['throughput_per_s']:.1f}" + (f" [{low:.1f}, {high:.1f}]" if low is not None else "")
        p = row["latency_ms"]
        cells = [f"{p[k]:.1f}" if p[k] is not None else "n/a" for k in ("p50", "p95", "p99")]
        batch = f"{row['mean_batch']:.2f}" if row["mean_batch"] else "n/a"
        rows.append([row["clients"], row["requests"], row["errors"], throughput, *cells, batch])
    lines = [
        f"# Served load: {s['ensemble']} at {s['server']}",
        "",
        f"{s['mode']}; {s['duration_s']} s per client count; image {s['image']} ({s['image_bytes']} bytes); "
        f"client {s['client_machine']}.",
        "",
        markdown_table(LOAD_COLUMNS, rows),
    ]
    return "\n".join(lines) + "\n"
