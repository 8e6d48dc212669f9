"""PASCAL-MT as a torch Dataset: read the selected tasks, apply the reference transforms, tag with meta."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from mtlora_deploy.errors import ConfigError, DataError
from mtlora_deploy.trainer.data.layout import (
    IGNORE_INDEX,
    NUM_HUMAN_PARTS,
    NUM_SEMSEG_CLASSES,
    SPLITS,
    TASKS,
    PascalLayout,
)
from mtlora_deploy.trainer.data.readers import check_files, has_person_parts, read_file, read_sample
from mtlora_deploy.trainer.data.transforms import eval_transform, train_transform
from mtlora_deploy.trainer.data.verify import verify_split_files
from mtlora_deploy.utils.atomic import write_json_atomic

PARTS_CACHE_VERSION = 1


def read_split(layout: PascalLayout, split: str) -> list[str]:
    """The ids listed in ``ImageSets/Context/<split>.txt`` (blank lines skipped)."""
    ids = read_file(layout.split_file(split), f"the '{split}' split", lambda p: p.read_text().split())
    if not ids:
        raise DataError(f"split file {layout.split_file(split)} lists no image ids")
    return ids


def _parts_cache_key(layout: PascalLayout, split: str, ids: list[str]) -> dict[str, Any]:
    digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()
    return {"version": PARTS_CACHE_VERSION, "root": str(layout.root.resolve()), "split": split, "ids_sha1": digest}


def find_ids_with_parts(
    layout: PascalLayout, split: str, ids: list[str], cache_dir: str | Path | None
) -> frozenset[str]:
    """Ids whose PASCAL-Part file has a person with parts, cached as JSON in ``cache_dir`` (never the dataset).

    Reading every ``.mat`` of a 5k-image split takes a while, so a run computes it once; the cache is
    keyed by root, split and the id list, and is recomputed when any of them changes.
    """
    key = _parts_cache_key(layout, split, ids)
    cache = Path(cache_dir) / f"pascal_mt_human_parts_{split}.json" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            if {k: stored.get(k) for k in key} == key:
                return frozenset(stored["ids_with_parts"])
        except (ValueError, KeyError, TypeError):
            pass  # a corrupt cache is rebuilt below
    found = [i for i in ids if has_person_parts(layout.human_parts(i))]
    if cache is not None:
        write_json_atomic(cache, {**key, "ids_with_parts": found})
    return frozenset(found)


def _check_options(split: str, tasks: tuple[str, ...], image_size: int) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not one of {SPLITS}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ConfigError(f"tasks={list(tasks)} must be distinct names from {TASKS}")
    if image_size < 8:
        raise ConfigError(f"image_size={image_size} is too small; use e.g. 448")


class PascalMTDataset(Dataset):
    """PASCAL-Context multi-task samples (or the synthetic set, which has the same layout).

    Each item is a dict: ``image`` float32 ``[3, S, S]`` (ImageNet-normalised); ``semseg`` and
    ``human_parts`` int64 ``[S, S]`` (255 = ignore); ``sal`` and ``edge`` float32 ``[1, S, S]`` in
    {0, 1}; ``normals`` float32 ``[3, S, S]`` unit vectors, 255 in all channels where ignored; and
    ``meta`` = ``{"id": str, "orig_size": [h, w]}``. Only the selected tasks are present.

    Augmentation randomness is a Generator seeded from ``(seed, epoch, index)``, so a sample is
    reproducible whatever the worker or order; call :meth:`set_epoch` at each epoch start.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Iterable[str] = TASKS,
        image_size: int = 448,
        train: bool = False,
        cache_dir: str | Path | None = None,
        seed: int = 0,
        num_classes: Mapping[str, int] | None = None,
    ) -> None:
        self.tasks = tuple(tasks)
        self.num_classes = {"semseg": NUM_SEMSEG_CLASSES, "human_parts": NUM_HUMAN_PARTS, **(num_classes or {})}
        _check_options(split, self.tasks, image_size)
        self.layout = PascalLayout(Path(root))
        if not self.layout.root.is_dir():
            raise DataError(f"dataset root {self.layout.root} is not a folder; pass the extracted PASCAL_MT folder")
        self.split, self.image_size, self.train, self.seed, self.epoch = (
            split,
            int(image_size),
            bool(train),
            int(seed),
            0,
        )
        self.ids = read_split(self.layout, split)
        check_files(self.layout, self.ids, self.tasks)
        verify_split_files(self.layout, self.ids, self.tasks, split)
        self.ids_with_parts: frozenset[str] | None = None
        if "human_parts" in self.tasks:
            self.ids_with_parts = find_ids_with_parts(self.layout, split, self.ids, cache_dir)

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (same epoch and index -> same sample)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> np.random.Generator:
        """The augmentation Generator of one sample, from ``(seed, epoch, index)`` only."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self.ids))[index]  # negative indices as for lists; out of range -> IndexError
        image_id = self.ids[index]
        raw = read_sample(self.layout, image_id, self.tasks, self.ids_with_parts)
        self._check_label_range(raw, image_id)
        orig_size = [int(raw["image"].shape[0]), int(raw["image"].shape[1])]
        if self.train:
            sample = train_transform(raw, self.generator(index), self.image_size)
        else:
            sample = eval_transform(raw, self.image_size)
        sample["meta"] = {"id": image_id, "orig_size": orig_size}
        return sample

    def _check_label_range(self, raw: dict[str, np.ndarray], image_id: str) -> None:
        """Class labels must be < the task's class count or the ignore value, or the loss fails far from the file."""
        for task, path in (("semseg", self.layout.semseg), ("human_parts", self.layout.human_parts)):
            if task not in raw:
                continue
            labels, classes = raw[task], self.num_classes[task]
            bad = labels[(labels >= classes) & (labels != IGNORE_INDEX)]
            if bad.size:
                raise DataError(
                    f"{path(image_id)} (task '{task}') has label value {int(bad.max())}; expected 0..{classes - 1} "
                    f"or {IGNORE_INDEX} (ignore); fix the file or set num_classes for {task}"
                )
