"""The predict panel: titled pictures, the segmentation laid over the photo, a legend of the classes present."""

from __future__ import annotations

import numpy as np
import torch

from mtlora_deploy.report.visualize import (
    GAP,
    TITLE_HEIGHT,
    classes_present,
    overlay,
    side_by_side,
    task_panel,
    visualize_output,
    voc_palette,
)


def _views(height: int = 48, width: int = 80) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    photo = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = np.zeros((height, width), np.int64)
    labels[10:30, 20:50], labels[35:45, 5:15] = 15, 8  # person, cat
    views = {
        "semseg": visualize_output("semseg", torch.from_numpy(labels)[None].float()),
        "sal": visualize_output("sal", torch.rand(1, height, width)),
    }
    return photo, views, labels


def test_classes_present_are_read_back_from_the_colours():
    _, views, labels = _views()
    assert classes_present(views["semseg"]) == sorted(np.unique(labels).tolist()) == [0, 8, 15]


def test_overlay_blends_only_the_labelled_pixels():
    photo, views, labels = _views()
    out = overlay(photo, views["semseg"], alpha=0.5)
    assert np.array_equal(out[labels == 0], photo[labels == 0])
    person = (0.5 * photo[labels == 15].astype(np.float32) + 0.5 * voc_palette()[15]).round()
    assert np.array_equal(out[labels == 15], person.astype(np.uint8))


def test_panel_has_titles_overlay_and_a_legend_row():
    photo, views, _ = _views()
    panel = task_panel(photo, views)
    tiles = 4  # input, semseg on input, semseg, sal
    assert panel.shape[1] == tiles * 80 + (tiles - 1) * GAP
    picture_rows = slice(TITLE_HEIGHT, TITLE_HEIGHT + 48)
    assert np.array_equal(panel[picture_rows, :80], photo)  # the photo under its title
    assert np.array_equal(panel[picture_rows, 2 * (80 + GAP) : 2 * (80 + GAP) + 80], views["semseg"])
    titles = panel[:TITLE_HEIGHT]
    assert (titles < 128).any() and (titles[:, :80] < 128).any()  # dark title text over each tile
    legend = panel[TITLE_HEIGHT + 48 :]
    assert legend.shape[0] >= TITLE_HEIGHT
    for index in (8, 15):  # each class present has its swatch in the legend
        assert (legend.reshape(-1, 3) == voc_palette()[index]).all(axis=1).any()
    assert not (legend.reshape(-1, 3) == voc_palette()[3]).all(axis=1).any()  # bird is not in the picture


def test_side_by_side_keeps_its_old_call():
    photo, views, _ = _views()
    plain = side_by_side([photo, *views.values()])
    assert plain.shape == (48, 3 * 80 + 2 * GAP, 3) and np.array_equal(plain[:, :80], photo)
