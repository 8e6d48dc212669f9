"""The post-step maps: logits resized bilinearly then argmax / sigmoid / normalised; labels-mode outputs resized
(class ids by nearest neighbour); every map at the requested size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mtlora_deploy.utils import imaging


def _bilinear(channel: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(channel.astype(np.float32), "F").resize((width, height), Image.BILINEAR))


def test_class_map_is_the_argmax_of_resized_logits():
    logits = np.random.default_rng(0).standard_normal((5, 8, 8)).astype(np.float32)
    labels = imaging.task_map(logits, imaging.CLASS, "logits", 30, 20)
    expected = np.stack([_bilinear(c, 30, 20) for c in logits]).argmax(0)
    assert labels.dtype == np.uint8 and labels.shape == (30, 20)
    np.testing.assert_array_equal(labels, expected)


def test_sigmoid_and_normal_maps():
    rng = np.random.default_rng(1)
    probability = imaging.task_map(rng.standard_normal((1, 8, 8)) * 30, imaging.SIGMOID, "logits", 16, 12)
    assert probability.dtype == np.float32 and probability.shape == (16, 12)
    assert 0.0 <= probability.min() and probability.max() <= 1.0
    normals = imaging.task_map(rng.standard_normal((3, 8, 8)), imaging.NORMAL, "logits", 16, 12)
    assert normals.shape == (3, 16, 12)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=0), 1.0, rtol=1e-5)


def test_labels_mode_outputs_keep_their_values():
    ids = np.random.default_rng(2).integers(0, 21, (1, 8, 8)).astype(np.uint8)
    labels = imaging.task_map(ids, imaging.CLASS, "labels", 16, 16)
    np.testing.assert_array_equal(labels, np.kron(ids[0], np.ones((2, 2), np.uint8)))  # nearest: each id doubled
    probability = np.full((1, 8, 8), 0.25, np.float32)
    np.testing.assert_allclose(imaging.task_map(probability, imaging.SIGMOID, "labels", 5, 7), 0.25, rtol=1e-6)


def test_bad_arrays_and_kinds_are_image_errors():
    with pytest.raises(imaging.ImageError, match="uint8"):
        imaging.check_rgb_array(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(imaging.ImageError, match="unknown map kind"):
        imaging.task_map(np.zeros((1, 2, 2)), "depth", "logits", 2, 2)
    with pytest.raises(imaging.ImageError, match="not a readable image"):
        imaging.decode_image(b"\x89PNG but not really")
