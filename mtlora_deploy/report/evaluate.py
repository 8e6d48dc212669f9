"""``mtlora evaluate`` as a library call: any artefact on any backend over a dataset split.

This module opens the artefact and finds its data; the scoring is ``trainer.evaluation``'s, as in training."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from mtlora_deploy.errors import ConfigError, MTLoRAError
from mtlora_deploy.trainer.delta import DeltaBaseline
from mtlora_deploy.trainer.evaluation import eval_dataset, evaluate_dataset
from mtlora_deploy.utils.atomic import write_json_atomic


def resolve_eval_data(data: str, artefact: Path) -> Path:
    """``synthetic`` means the set generated into the run folder that holds ``artefact`` or that it was made from:
    an ONNX graph, plan or merged folder leads back to its run through the ``source`` each records (the demo's
    ``runs/demo/onnx/model.int8.onnx`` -> ``runs/demo/merged`` -> ``runs/demo/train`` -> ``runs/demo/train/data``)."""
    if data != "synthetic":
        return Path(data)
    for origin in made_from(artefact):
        for folder in [origin, *origin.absolute().parents][:4]:
            if (folder / "data" / "synthetic.json").is_file():
                return folder / "data"
    raise ConfigError(
        f"`data` synthetic: no synthetic set found in a run folder around {artefact}; "
        "pass `data` DIR (make one with: mtlora make-dataset synthetic DIR)",
        field="data",
    )


def made_from(artefact: Path, hops: int = 4) -> list[Path]:
    """``artefact`` and what it was made from, as far as each records it (an ONNX graph's ``source`` metadata, a
    plan's graph in its manifest, a merged or checkpoint folder's ``source``)."""
    chain = [Path(artefact)]
    while len(chain) <= hops and (source := _source_of(chain[-1])) is not None and source not in chain:
        chain.append(source)
    return chain


def _source_of(path: Path) -> Path | None:
    import json

    from mtlora_deploy.utils.artifacts import artifact_kind

    try:
        kind = artifact_kind(path)
        if kind == "onnx":
            from mtlora_deploy.utils.onnx_info import onnx_metadata

            source = onnx_metadata(path).get("source")
        elif kind == "plan":
            from mtlora_deploy.engines.manifest import read_manifest

            source = (read_manifest(path).get("onnx") or {}).get("path")
        else:
            info = path / "model.json" if path.is_dir() else path.with_suffix(".json")
            source = json.loads(info.read_text()).get("metadata", {}).get("source")
    except (OSError, ValueError, AttributeError, MTLoRAError):
        return None
    return Path(source) if isinstance(source, str) and Path(source).exists() else None


def evaluate_artifact(
    path: str | Path,
    data: str,
    split: str = "val",
    backend: str = "auto",
    device: str = "cpu",
    batch_size: int = 8,
    num_images: int | None = None,
    baselines: Mapping[str, float] | DeltaBaseline | None = None,
    output: str | Path | None = None,
    workers: int = 0,
    console: Console | None = None,
) -> dict[str, Any]:
    """Per-task metrics, primary metrics and delta-m of ``path`` on ``split``; optionally written as JSON.

    ``baselines``: what delta-m is measured against (a :class:`DeltaBaseline`; plain ``{task: value}`` is named
    ``given``; None: the single-task Swin-T reference). The result names it: ``delta_m_vs_<name>`` and
    ``delta_m_baseline``.
    """
    from mtlora_deploy.engines.registry import open_backend

    path = Path(path)
    runner = open_backend(path, backend, device)
    dataset = eval_dataset(resolve_eval_data(data, path), split, runner.tasks, runner.image_size, num_images)
    shown = console is not None and console.is_terminal  # a log file gets no bar (nor the empty line it leaves)
    with Progress(console=console, transient=True, disable=not shown) as bar, runner:
        task_id = bar.add_task(f"evaluate {path.name} [{runner.name}]", total=len(dataset))
        result = evaluate_dataset(
            runner,
            dataset,
            runner.tasks,
            batch_size,
            runner.device,
            workers,
            baselines=baselines,
            on_batch=lambda n: bar.advance(task_id, n),
        )
    result.update({"artefact": str(path), "backend": runner.describe(), "split": split, "data": str(data)})
    if output is not None:
        write_json_atomic(output, result)
    return result
