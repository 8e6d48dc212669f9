"""PascalMTDataset on the synthetic set: sample format, splits, reproducibility, parts cache, read-only data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from mtlora_deploy.errors import ConfigError, DataError
from mtlora_deploy.trainer.data import TASKS, PascalLayout, PascalMTDataset, has_person_parts, make_synthetic_dataset

S = 32


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "pascal", 10, seed=2, image_size=(48, 56))


def test_split_sizes(synth: Path) -> None:
    train, val = PascalMTDataset(synth, "train", tasks=["sal"]), PascalMTDataset(synth, "val", tasks=["sal"])
    assert (len(train), len(val)) == (8, 2) and not set(train.ids) & set(val.ids)


def test_sample_format(synth: Path, tmp_path: Path) -> None:
    sample = PascalMTDataset(synth, "val", image_size=S, train=True, cache_dir=tmp_path)[0]
    assert set(sample) == {"image", "meta", *TASKS}
    assert sample["image"].shape == (3, S, S) and sample["image"].dtype == torch.float32
    for key in ("semseg", "human_parts"):
        assert sample[key].shape == (S, S) and sample[key].dtype == torch.int64
    for key in ("sal", "edge"):
        assert sample[key].shape == (1, S, S) and set(sample[key].unique().tolist()) <= {0.0, 1.0}
    assert sample["normals"].shape == (3, S, S) and sample["normals"].dtype == torch.float32
    assert sample["meta"]["orig_size"] == [48, 56] and sample["meta"]["id"].startswith("synth_")
    only = PascalMTDataset(synth, "val", tasks=("normals", "semseg"), image_size=S)[1]
    assert set(only) == {"image", "meta", "normals", "semseg"}


def test_augmentation_reproducible_from_seed_epoch_index(synth: Path) -> None:
    def images(seed: int, epoch: int) -> list[torch.Tensor]:
        dataset = PascalMTDataset(synth, "train", tasks=["semseg"], image_size=S, train=True, seed=seed)
        dataset.set_epoch(epoch)
        return [dataset[i]["image"] for i in range(4)]

    same = images(0, 0)
    assert all(torch.equal(a, b) for a, b in zip(same, images(0, 0), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(same, images(0, 1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(same, images(1, 0), strict=True))
    dataset = PascalMTDataset(synth, "train", tasks=["semseg"], image_size=S, train=True)
    assert torch.equal(dataset[3]["image"], dataset[3]["image"]) and torch.equal(
        dataset[-1]["image"], dataset[7]["image"]
    )


def test_parts_cache_goes_to_cache_dir_only(synth: Path, tmp_path: Path) -> None:
    before = _snapshot(synth)
    dataset = PascalMTDataset(synth, "train", tasks=["human_parts"], image_size=S, cache_dir=tmp_path / "run")
    [dataset[i] for i in range(len(dataset))]
    assert _snapshot(synth) == before
    cache = tmp_path / "run" / "pascal_mt_human_parts_train.json"
    assert [p.name for p in (tmp_path / "run").iterdir()] == [cache.name]
    stored = json.loads(cache.read_text())
    layout = PascalLayout(synth)
    expected = [i for i in dataset.ids if has_person_parts(layout.human_parts(i))]
    assert stored["ids_with_parts"] == expected and 0 < len(expected) < len(dataset)
    assert stored["split"] == "train" and stored["root"] == str(synth.resolve())


def test_parts_cache_is_reused_and_keyed_by_root(synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    PascalMTDataset(synth, "train", tasks=["human_parts"], cache_dir=run)
    cache = run / "pascal_mt_human_parts_train.json"
    stored = json.loads(cache.read_text())
    cache.write_text(json.dumps({**stored, "ids_with_parts": []}))  # a doctored cache proves it is read
    dataset = PascalMTDataset(synth, "train", tasks=["human_parts"], image_size=S, cache_dir=run)
    assert dataset.ids_with_parts == frozenset()
    assert all((dataset[i]["human_parts"] == 255).all() for i in range(len(dataset)))
    other = shutil.copytree(synth, tmp_path / "other")
    assert PascalMTDataset(other, "train", tasks=["human_parts"], cache_dir=run).ids_with_parts == frozenset(
        stored["ids_with_parts"]
    )


def test_no_cache_dir_writes_nothing(synth: Path) -> None:
    before = _snapshot(synth)
    dataset = PascalMTDataset(synth, "val", image_size=S, train=True, cache_dir=None)
    [dataset[i] for i in range(len(dataset))]
    assert _snapshot(synth) == before


def test_only_selected_tasks_need_files(synth: Path, tmp_path: Path) -> None:
    root = shutil.copytree(synth, tmp_path / "copy")
    shutil.rmtree(root / "human_parts")
    shutil.rmtree(root / "pascal-context")
    assert set(PascalMTDataset(root, "train", tasks=["semseg", "sal"], image_size=S)[0]) == {
        "image",
        "meta",
        "semseg",
        "sal",
    }
    with pytest.raises(DataError, match=r"human_parts/synth_\d+\.mat \(needed by task 'human_parts'\)"):
        PascalMTDataset(root, "train", tasks=["semseg", "human_parts"])
    with pytest.raises(DataError, match=r"pascal-context/trainval/synth_\d+\.mat \(needed by task 'edge'\)"):
        PascalMTDataset(root, "train", tasks=["edge"])
    (root / "ImageSets" / "Context" / "val.txt").unlink()
    with pytest.raises(DataError, match=r"val\.txt \(needed by the 'val' split\)"):
        PascalMTDataset(root, "val", tasks=["sal"])


def test_bad_options_are_config_errors(synth: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="depth"):
        PascalMTDataset(synth, tasks=["semseg", "depth"])
    with pytest.raises(ConfigError, match="split"):
        PascalMTDataset(synth, split="test")
    with pytest.raises(DataError, match="not a folder"):
        PascalMTDataset(tmp_path / "nowhere")


def test_dataloader_batches(synth: Path) -> None:
    loader = DataLoader(PascalMTDataset(synth, "train", image_size=S, train=True), batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, S, S) and batch["semseg"].shape == (4, S, S)
    assert batch["meta"]["id"] == loader.dataset.ids[:4]
