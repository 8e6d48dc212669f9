"""Shared fixtures (a tiny synthetic dataset, the tiny model exported to ONNX, a calibration draw) and helpers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mtlora_deploy.calib.dataset import draw_calibration_set
from mtlora_deploy.deploy.export import export_onnx
from mtlora_deploy.trainer.data import make_synthetic_dataset
from tests.conftest import randomize_lora, tiny_model


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """24 images (18 train / 6 val) of 48 x 64."""
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("calib_data") / "data", num_images=24, seed=0, image_size=(48, 64)
    )


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """The tiny 4-task model (random LoRA) exported with metadata by the TorchScript exporter (fast)."""
    model = tiny_model()
    randomize_lora(model)
    path = tmp_path_factory.mktemp("calib_onnx") / "tiny.onnx"
    export_onnx(model, path)
    return path


@pytest.fixture(scope="session")
def calib_npz(synthetic_root, tmp_path_factory):
    """16 train images at 64 x 64 keyed by ``image``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return draw_calibration_set(synthetic_root, "train", 16, 64, 0, tmp_path_factory.mktemp("calib") / "train.npz")


def relative_error(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output: max |out - ref| / max |ref|."""
    return {t: float(np.abs(out[t] - ref[t]).max() / np.abs(ref[t]).max()) for t in ref}
