"""Datasets and loaders for a run: PASCAL-MT or the synthetic set generated into the run folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.trainer.config import TrainConfig
from mtlora_deploy.trainer.data import PascalMTDataset, make_synthetic_dataset
from mtlora_deploy.trainer.data.worker_errors import GuardedDataset, GuardedLoader, guarded_collate
from mtlora_deploy.trainer.distributed import DistContext, barrier

SYNTHETIC_SIZE = (160, 192)
DEFAULT_WORKERS = 4


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | None) -> int:
    """DataLoader worker processes: None means the default, never more than the usable cores; an explicit count
    above them is kept, said once in one line (torch's own warning about it is held back by the CLI)."""
    cores = usable_cores()
    if workers is None:
        return min(DEFAULT_WORKERS, cores)
    if workers > cores:
        from mtlora_deploy.errors import warn

        warn(f"`num_workers` {workers} is more than the {cores} CPU cores this process may use; loading may be slower")
    return workers


def resolve_data_root(train: TrainConfig, run_dir: Path, context: DistContext) -> Path:
    """The dataset folder; ``synthetic`` is generated once into ``RUN/data`` (by rank 0)."""
    if train.data != "synthetic":
        return Path(train.data)
    root = run_dir / "data"
    if context.is_main and not (root / "synthetic.json").is_file():
        make_synthetic_dataset(root, num_images=train.synthetic_images, seed=train.seed, image_size=SYNTHETIC_SIZE)
    barrier(context)
    return root


def build_dataset(root: Path, split: str, model: ModelConfig, train_mode: bool, cache_dir: Path | None, seed: int):
    """A PascalMTDataset at the model's input size with the reference train or eval transforms."""
    return PascalMTDataset(
        root,
        split=split,
        tasks=model.tasks,
        image_size=model.image_size,
        train=train_mode,
        cache_dir=cache_dir,
        seed=seed,
        num_classes={task: model.output_channels(task) for task in model.tasks if task in ("semseg", "human_parts")},
    )


class SkipSampler(Sampler[int]):
    """Wraps a sampler and drops its first ``skip`` indices: an exact mid-epoch resume."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return iter(list(self.sampler)[self.skip :])

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


def train_sampler(dataset, train: TrainConfig, context: DistContext) -> DistributedSampler:
    """Seeded, epoch-dependent shuffling sharded over ranks (one rank: a plain seeded shuffle)."""
    return DistributedSampler(
        dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=train.seed, drop_last=True
    )


def make_loader(
    dataset, sampler: Sampler | None, batch_size: int, workers: int | None, drop_last: bool, device, seed: int = 0
) -> DataLoader:
    """A DataLoader with pinned memory on CUDA; its own generator keeps the global RNG untouched (exact resume).

    ``workers`` None: the default count, at most the usable cores (:func:`resolve_workers`).

    A DataError in a worker is raised in this process as the same one-line error as with ``workers=0``.
    """
    return GuardedLoader(
        GuardedDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=resolve_workers(workers),
        drop_last=drop_last,
        pin_memory=torch.device(device).type == "cuda",
        generator=torch.Generator().manual_seed(seed),
        collate_fn=guarded_collate(),
    )


def val_sampler(dataset, context: DistContext) -> Sampler | None:
    """Each rank scores a disjoint shard; metric states are summed afterwards."""
    if not context.enabled:
        return None
    indices = list(range(context.rank, len(dataset), context.world_size))
    return _IndexSampler(indices)


class _IndexSampler(Sampler[int]):
    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
