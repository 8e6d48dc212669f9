"""Whole checkpoints of the reference MTLoRA code: read them safely, detect their model config, import them.

The reference ``utils.save_checkpoint`` writes ``{model, optimizer, lr_scheduler, max_accuracy, scaler, epoch,
config}`` with ``config`` a pickled yacs ``CfgNode``. Reading goes through ``state_io.load_torch_file``: torch's
weights-only unpickler with ``OrderedDict`` (the one dict type it both fills and builds) registered under the name
``yacs.config.CfgNode``, so yacs need not be installed and no pickled code runs: any other global is refused with one
line naming it. Every mapping comes back as a plain dict. The stored config's keys (``TASKS``, ``DATA.IMG_SIZE``,
``MODEL.SWIN.*``, ``MODEL.MTLORA.*``, ``MODEL.DECODER_*``) map to our :class:`ModelConfig` fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtlora_deploy.errors import ConfigError, WeightsError
from mtlora_deploy.model.config import BACKBONE_ARCHS, TASK_OUTPUT_CHANNELS, ModelConfig
from mtlora_deploy.model.reference.keys import load_reference_state
from mtlora_deploy.model.reference.options import FIXED_MTLORA_OPTIONS
from mtlora_deploy.model.state_io import load_torch_file, unwrap_state_dict


# ----------------------------------------------------------------------------------------------- config detection
def _get(cfg: dict, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _per_stage(value: Any, stages: int, key: str, source: str) -> list:
    """The reference's per-stage lists: a scalar or a 1-element list means every stage."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) == 1:
        values = values * stages
    if len(values) != stages:
        raise WeightsError(f"{source}: config {key} = {value!r}, expected one value or {stages} (one per stage)")
    return values


def _uniform(values: list, key: str, field: str, source: str) -> Any:
    """One value for every stage, or a one-line error (our config has one value per field)."""
    if any(v != values[0] for v in values):
        raise WeightsError(f"{source}: config {key} = {values} differs between stages; {field} is one value here")
    return values[0]


def _backbone_for(swin: dict, source: str) -> str:
    arch = dict(
        embed_dim=swin.get("EMBED_DIM", 96),
        depths=tuple(swin.get("DEPTHS", (2, 2, 6, 2))),
        num_heads=tuple(swin.get("NUM_HEADS", (3, 6, 12, 24))),
        window_size=swin.get("WINDOW_SIZE", 7),
    )
    for name, known in BACKBONE_ARCHS.items():
        if {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in known.items()} == arch:
            return name
    raise WeightsError(f"{source}: config MODEL.SWIN {arch} matches no known backbone ({', '.join(BACKBONE_ARCHS)})")


def detect_model_config(cfg: dict, source: str) -> dict[str, tuple[Any, str]]:
    """Our config fields from a reference config: ``{field: (value, reference key it came from)}``.

    The task-specific scale is ``MODEL.MTLORA.SCALE_PER_TASK`` (default: ``SHARED_SCALE``), which is what the
    reference model uses; its ``TASK_SCALE`` key is read by nothing.

    Raises:
        WeightsError: the config uses a reference option this toolkit does not implement (named).
    """
    tasks = _get(cfg, "TASKS")
    if not tasks:
        raise WeightsError(f"{source}: the stored config has no TASKS (not a multi-task checkpoint)")
    swin = _get(cfg, "MODEL.SWIN", {}) or {}
    if _get(cfg, "MODEL.TYPE", "swin") != "swin" or swin.get("APE", False) or swin.get("PATCH_SIZE", 4) != 4:
        raise WeightsError(f"{source}: config MODEL.TYPE/SWIN describes a model other than Swin v1 with patch 4")
    found: dict[str, tuple[Any, str]] = {
        "tasks": (tuple(tasks), "TASKS"),
        "backbone": (_backbone_for(swin, source), "MODEL.SWIN"),
    }
    for field, key in (("image_size", "DATA.IMG_SIZE"), ("drop_path_rate", "MODEL.DROP_PATH_RATE")):
        if _get(cfg, key) is not None:
            found[field] = (_get(cfg, key), key)
    widths = _get(cfg, "MODEL.DECODER_CHANNELS")
    if widths is not None:
        found["decoder_widths"] = (tuple(widths), "MODEL.DECODER_CHANNELS")
        found["head_channels"] = (4 * sum(widths), "MODEL.DECODER_CHANNELS (head width 4 x sum)")
    found.update(_decoders(cfg, tasks, source))
    found.update(_mtlora(cfg, tasks, len(swin.get("DEPTHS", (2, 2, 6, 2))), source))
    return found


def _decoders(cfg: dict, tasks: list, source: str) -> dict[str, tuple[Any, str]]:
    heads = _get(cfg, "MODEL.DECODER_HEAD", {}) or {}
    for task in tasks:
        if heads.get(task, "hrnet") != "hrnet":
            raise WeightsError(f"{source}: config MODEL.DECODER_HEAD.{task} = {heads[task]!r}, only hrnet is supported")
    outputs = _get(cfg, "TASKS_CONFIG.ALL_TASKS.NUM_OUTPUT", {}) or {}
    classes = {t: int(n) for t, n in outputs.items() if t in tasks and int(n) != TASK_OUTPUT_CHANNELS.get(t)}
    return {"num_classes": (classes, "TASKS_CONFIG.ALL_TASKS.NUM_OUTPUT")} if classes else {}


def _mtlora(cfg: dict, tasks: list, stages: int, source: str) -> dict[str, tuple[Any, str]]:
    mtlora = _get(cfg, "MODEL.MTLORA", {}) or {}
    if not mtlora.get("ENABLED", False):
        trainable = "decoders" if _get(cfg, "MODEL.FREEZE_BACKBONE", False) else "full"
        return {"adapter": ("none", "MODEL.MTLORA.ENABLED"), "trainable": (trainable, "MODEL.FREEZE_BACKBONE")}
    for key, wanted in FIXED_MTLORA_OPTIONS.items():
        if key in mtlora and mtlora[key] != wanted:
            raise WeightsError(
                f"{source}: config MODEL.MTLORA.{key} = {mtlora[key]!r} is not supported (expected {wanted!r})"
            )

    def one(key: str, value: Any, field: str) -> Any:
        return _uniform(_per_stage(value, stages, key, source), key, field, source)

    per_task_r = mtlora.get("R_PER_TASK") or {}
    shared_key = "MODEL.MTLORA.R_PER_TASK.shared" if "shared" in per_task_r else "MODEL.MTLORA.R"
    shared_rank = one(shared_key, per_task_r.get("shared", mtlora.get("R", 8)), "task_agnostic_rank")
    shared_scale = one("MODEL.MTLORA.SHARED_SCALE", mtlora.get("SHARED_SCALE", 2.0), "lora_scale")
    per_task_s = mtlora.get("SCALE_PER_TASK") or {}
    task_ranks = {t: one(f"MODEL.MTLORA.R_PER_TASK.{t}", per_task_r.get(t, shared_rank), "rank") for t in tasks}
    task_scales = {t: one(f"MODEL.MTLORA.SCALE_PER_TASK.{t}", per_task_s.get(t, shared_scale), "scale") for t in tasks}
    for name, values, field in (
        ("R_PER_TASK", task_ranks, "task_specific_rank"),
        ("SCALE_PER_TASK", task_scales, "task_specific_scale"),
    ):
        if len(set(values.values())) > 1:
            raise WeightsError(
                f"{source}: config MODEL.MTLORA.{name} differs between tasks {values}; {field} is one "
                "value for every task here"
            )
    return {
        "adapter": ("mtlora", "MODEL.MTLORA.ENABLED"),
        "trainable": ("reference", "MODEL.MTLORA.FREEZE_PRETRAINED"),
        "task_agnostic_rank": (int(shared_rank), shared_key),
        "task_specific_rank": (int(next(iter(task_ranks.values()))), "MODEL.MTLORA.R_PER_TASK"),
        "lora_scale": (float(shared_scale), "MODEL.MTLORA.SHARED_SCALE"),
        "task_specific_scale": (float(next(iter(task_scales.values()))), "MODEL.MTLORA.SCALE_PER_TASK"),
        "lora_dropout": (
            float(one("MODEL.MTLORA.DROPOUT", mtlora.get("DROPOUT", 0.05), "lora_dropout")),
            "MODEL.MTLORA.DROPOUT",
        ),
        "lora_on_reductions": (bool(mtlora.get("DOWNSAMPLER_ENABLED", False)), "MODEL.MTLORA.DOWNSAMPLER_ENABLED"),
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=False))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def resolve_import_config(
    detected: dict[str, tuple[Any, str]] | None, given: dict[str, tuple[Any, str]], source: str
) -> ModelConfig:
    """Defaults < detected < what the user gave; a given value that contradicts the checkpoint is an error.

    Args:
        detected: from :func:`detect_model_config`, or None for a file without a stored config.
        given: ``{field: (value, where it came from, e.g. 'preset mtlora-r16')}``.
        source: the checkpoint path, for messages.
    """
    if detected is None and not given:
        raise ConfigError(
            f"{source} holds no reference config (a bare state dict): pass `preset` and `tasks`, e.g. "
            "`preset` mtlora-r64 `tasks` semseg,human_parts,sal,normals"
        )
    data = {field: value for field, (value, _) in (detected or {}).items()}
    for field, (value, option) in given.items():
        if detected and field in detected and not _same(value, detected[field][0]):
            ref_value, ref_key = detected[field]
            shown = ",".join(value) if field == "tasks" else value
            ref_shown = ",".join(ref_value) if field == "tasks" else ref_value
            raise ConfigError(
                f"{option} gives {field}={shown} but {source} was trained with {field}={ref_shown} ({ref_key}); "
                "drop the option or fix it"
            )
        data[field] = value
    return ModelConfig.from_dict(data, source=str(source))


def describe_detected(detected: dict[str, tuple[Any, str]]) -> str:
    """One readable line of what was detected, e.g. ``tasks=semseg,sal  backbone=swin_tiny...  rank=64``."""
    parts = []
    for field, (value, _) in detected.items():
        shown = ",".join(value) if field == "tasks" else value
        parts.append(f"{field}={shown}")
    return "  ".join(parts)


# ----------------------------------------------------------------------------------------------- whole files
def read_reference_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None, dict[str, Any]]:
    """A reference ``.pth`` -> (model state dict, stored config as a plain dict or None, ``{'epoch': ...}``)."""
    raw = load_torch_file(path)
    config = raw.get("config") if isinstance(raw, dict) and isinstance(raw.get("config"), dict) else None
    extras = {k: raw[k] for k in ("epoch", "max_accuracy") if isinstance(raw, dict) and k in raw}
    return unwrap_state_dict(raw, path), config, extras


def import_reference(
    path: str | Path, given: dict[str, tuple[Any, str]], allow_unused: bool = False
) -> tuple[torch.nn.Module, list[str], dict[str, tuple[Any, str]] | None]:
    """Read a reference checkpoint, resolve its config (stored < ``given``, which must agree), load our model.

    Returns:
        (model in eval mode, reference keys that fit nowhere, what the stored config gave or None).
    """
    state, stored, _ = read_reference_checkpoint(path)
    detected = detect_model_config(stored, str(path)) if stored is not None else None
    config = resolve_import_config(detected, given, str(path))
    model, unused = load_reference_state(state, config, str(path), allow_unused)
    return model, unused, detected
