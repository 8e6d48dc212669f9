"""``mtlora predict IMG... --server URL``: the ensemble computes the maps, this draws them exactly as local predict.

Each image file goes to the server as its encoded bytes (the served pre-step decodes it as ``utils.imaging`` does
locally); the maps come back at the image's size and pass through ``report.predict.write_pictures``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.report.predict import read_rgb, write_pictures
from mtlora_deploy.report.predict_inputs import check_images, collect_images, output_names
from mtlora_deploy.serve.client import InferenceError, Input, TritonClient
from mtlora_deploy.serve.repository import BYTES_INPUT


def served_ensemble(client: TritonClient, name: str | None = None) -> tuple[str, list[str]]:
    """The served ensemble that takes encoded images (``name``, or the only one on the server) and its outputs."""
    names = [name] if name else [m["name"] for m in client.repository_index() if m.get("state") == "READY"]
    found = []
    for candidate in names:
        try:
            config = client.model_config(candidate)
        except InferenceError as exc:
            raise ConfigError(f"`served_model` {candidate}: {exc.message}", field="served_model") from exc
        if config.get("platform") == "ensemble" and [i["name"] for i in config.get("input", [])] == [BYTES_INPUT]:
            found.append((candidate, [o["name"] for o in config["output"]]))
    if name and not found:
        raise ConfigError(
            f"`served_model` {name}: not an ensemble written by mtlora export-triton (input image_bytes)",
            field="served_model",
        )
    if len(found) != 1:
        listed = ", ".join(f for f, _ in found) or "none"
        raise ConfigError(
            f"`url` {client.url}: {len(found)} mtlora ensembles ({listed}); pick one with `served_model`", field="url"
        )
    return found[0]


def served_maps(client: TritonClient, ensemble: str, tasks: list[str], data: bytes) -> dict[str, np.ndarray]:
    """One encoded image -> ``{task: map}`` from the server, in the ensemble's task order."""
    outputs = client.infer(ensemble, [Input(BYTES_INPUT, [data])], outputs=tasks)
    return {task: outputs[task][0].copy() for task in tasks}  # frombuffer views are read-only


def predict_served(
    url: str, images: list[str | Path], output: str | Path, served_model: str | None = None
) -> list[Path]:
    """Write the same ``<image>_<task>.png`` and ``<image>_panel.png`` as ``predict_images``, from served maps."""
    output, images = Path(output), collect_images([Path(p) for p in images])
    check_images(images)
    names = output_names(images)
    client = TritonClient(url)
    try:
        ensemble, tasks = served_ensemble(client, served_model)
        panels = []
        for path, name in zip(images, names, strict=True):
            try:
                maps = served_maps(client, ensemble, tasks, path.read_bytes())
            except InferenceError as exc:
                raise ConfigError(f"`url` {url}: {path}: {exc.message}", field="url") from exc
            panels.append(write_pictures(read_rgb(path), maps, output, name))
        return panels
    finally:
        client.close()
