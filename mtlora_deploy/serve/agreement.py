"""Serve a graph for a moment and compare: every image through the served ensemble and through local predict, the
maps compared bit for bit, and the served latency at one client (what ``mtlora demo`` ends with)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from mtlora_deploy.serve.client import TritonClient
from mtlora_deploy.serve.predict import served_ensemble, served_maps
from mtlora_deploy.serve.repository import MANIFEST, export_triton, read_repository_manifest
from mtlora_deploy.serve.server import Ports, TritonServer
from mtlora_deploy.utils.hashing import file_sha256


def repository_of(graph: Path, folder: Path) -> Path:
    """``folder`` as the repository of ``graph``: kept when it was written from this very graph, else rewritten."""
    if (folder / MANIFEST).is_file() and read_repository_manifest(folder)["source"]["sha256"] == file_sha256(graph):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    return export_triton(graph, folder).path


def served_vs_local(graph: str | Path, images: list[Path], workdir: str | Path) -> dict[str, Any]:
    """Serve ``graph`` (repository in ``workdir/triton``) on free loopback ports, send ``images`` one at a time, and
    compare each served map with local predict's; the server is stopped before returning."""
    from mtlora_deploy.engines.registry import open_backend
    from mtlora_deploy.report.predict import graph_conventions, predict_maps, read_rgb

    graph, workdir = Path(graph), Path(workdir)
    repository = repository_of(graph, workdir / "triton")
    started = time.monotonic()
    with TritonServer(repository, workdir / "triton_run", Ports.free()) as server, open_backend(graph) as runner:
        ready_s, client = time.monotonic() - started, TritonClient(server.url)
        ensemble, tasks = served_ensemble(client)
        conventions, latencies, equal, worst = graph_conventions(runner.metadata), [], 0, 0.0
        for path in images:
            data, rgb = path.read_bytes(), read_rgb(path)
            sent = time.perf_counter()
            served = served_maps(client, ensemble, tasks, data)
            latencies.append((time.perf_counter() - sent) * 1e3)
            local = predict_maps(runner, rgb, conventions)
            equal += sum(np.array_equal(served[t], local[t]) for t in tasks)
            worst = max([worst, *(float(np.abs(served[t].astype(float) - local[t]).max()) for t in tasks)])
        client.close()
        notes = server.notes
    return {
        "images": len(images),
        "maps": len(images) * len(tasks),
        "bit_equal_maps": int(equal),
        "max_abs_difference": worst,
        "latency_ms": {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95))},
        "ready_s": ready_s,
        "repository": str(repository),
        "notes": notes,
    }
