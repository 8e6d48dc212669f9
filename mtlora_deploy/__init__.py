"""mtlora_deploy: train MTLoRA multi-task Swin models and deploy them fast on NVIDIA GPUs."""

from __future__ import annotations

from pathlib import Path

from mtlora_deploy._version import __version__


def load(path: str | Path, device: str = "cpu"):
    """Load a model in eval mode from a checkpoint pair, a run folder or a merged-model folder."""
    import mtlora_deploy.deploy.merge  # noqa: F401  (registers the "merged" checkpoint kind)
    from mtlora_deploy.model.checkpoint import load_checkpoint

    return load_checkpoint(path, device=device)


__all__ = ["__version__", "load"]
