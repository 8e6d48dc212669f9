"""``mtlora predict``: maps at each image's own size and aspect, folders as input, and every PIL mode read as its
pixels (16-bit, palette, CMYK, alpha, grey, 1-bit) or refused in one line with nothing written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mtlora_deploy.cli.main import cli
from mtlora_deploy.report.visualize import TITLE_HEIGHT
from mtlora_deploy.utils import imaging

TASKS = ("semseg", "sal", "normals")


def _reference(height: int = 48, width: int = 72) -> np.ndarray:
    """A smooth colour picture with dark and bright parts."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) % 256], -1).astype(np.uint8)


def _write(tmp_path, name: str, image: Image.Image, **save) -> object:
    path = tmp_path / name
    image.save(path, **save)
    return path


def _cases(tmp_path):
    """name -> (file, the RGB the pre-step must read from it)."""
    ref = Image.fromarray(_reference())
    grey = np.asarray(ref.convert("L"))
    rgba = np.dstack([_reference(), np.full((48, 72), 255, np.uint8)])
    rgba[:, :20, 3] = 0  # transparent on the left: composited onto white
    with_alpha = np.where(rgba[..., 3:] == 0, 255, rgba[..., :3]).astype(np.uint8)
    palette = ref.convert("P")
    transparent_palette = palette.copy()
    transparent_palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    palette_alpha = np.asarray(transparent_palette.convert("RGBA"))
    palette_expected = np.where(palette_alpha[..., 3:] == 0, 255, palette_alpha[..., :3]).astype(np.uint8)
    cmyk = ref.convert("CMYK")
    return {
        "rgb": (_write(tmp_path, "rgb.png", ref), _reference()),
        "grey L": (_write(tmp_path, "grey.png", ref.convert("L")), np.repeat(grey[..., None], 3, -1)),
        "16-bit grey": (
            _write(tmp_path, "grey16.png", Image.fromarray(grey.astype(np.uint16) * 257)),
            np.repeat(grey[..., None], 3, -1),
        ),
        "32-bit int grey": (
            _write(tmp_path, "grey32.tif", Image.fromarray(grey.astype(np.int32) * 257)),
            np.repeat(grey[..., None], 3, -1),
        ),
        "1-bit": (_write(tmp_path, "bits.png", ref.convert("1")), np.asarray(ref.convert("1").convert("RGB"))),
        "palette": (_write(tmp_path, "palette.png", palette), np.asarray(palette.convert("RGB"))),
        "palette with transparency": (
            _write(
                tmp_path, "palette_t.png", transparent_palette, transparency=transparent_palette.info["transparency"]
            ),
            palette_expected,
        ),
        "RGBA": (_write(tmp_path, "rgba.png", Image.fromarray(rgba)), with_alpha),
        "grey with alpha": (
            _write(tmp_path, "la.png", Image.fromarray(np.dstack([grey, rgba[..., 3]]), "LA")),
            np.where(rgba[..., 3:] == 0, 255, np.repeat(grey[..., None], 3, -1)).astype(np.uint8),
        ),
        "CMYK": (_write(tmp_path, "cmyk.tif", cmyk), np.asarray(cmyk.convert("RGB"))),
    }


def test_every_mode_is_read_as_its_pixels(tmp_path):
    for name, (path, expected) in _cases(tmp_path).items():
        with Image.open(path) as opened:
            mode = opened.mode
        decoded = imaging.decode_image(path)
        assert decoded.dtype == np.uint8 and decoded.shape == (48, 72, 3), name
        np.testing.assert_array_equal(decoded, expected, err_msg=f"{name} (PIL mode {mode})")
        assert 0 < decoded.mean() < 250, f"{name}: saturated"


def test_predict_writes_every_task_at_the_image_size_and_aspect(predict_graph, tmp_path):
    path = _write(tmp_path, "wide.png", Image.fromarray(_reference(160, 192)))
    result = CliRunner().invoke(cli, ["predict", str(path), "-m", str(predict_graph), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for task in TASKS:
        assert Image.open(tmp_path / "out" / f"wide_{task}.png").size == (192, 160), task
    panel = np.asarray(Image.open(tmp_path / "out" / "wide_panel.png"))
    picture = panel[TITLE_HEIGHT : TITLE_HEIGHT + 160, :192]  # the input tile, under its title strip
    np.testing.assert_array_equal(picture, _reference(160, 192))  # the input part is the picture itself


def test_a_16_bit_input_is_not_saturated_in_the_panel(predict_graph, tmp_path):
    grey = np.asarray(Image.fromarray(_reference()).convert("L"))
    path = _write(tmp_path, "deep.png", Image.fromarray(grey.astype(np.uint16) * 257))
    result = CliRunner().invoke(cli, ["predict", str(path), "-m", str(predict_graph), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    panel = np.asarray(Image.open(tmp_path / "out" / "deep_panel.png"))
    np.testing.assert_array_equal(panel[TITLE_HEIGHT : TITLE_HEIGHT + grey.shape[0], :72, 0], grey)


def test_exif_orientation_turns_the_image_upright(tmp_path):
    image = Image.fromarray(_reference(40, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _write(tmp_path, "turned.jpg", image, exif=exif.tobytes())
    assert imaging.decode_image(path).shape == (60, 40, 3)


def test_a_folder_stands_for_its_images(predict_graph, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _write(folder, "a.jpg", Image.fromarray(_reference(30, 50)))
    _write(folder, "b.png", Image.fromarray(_reference(50, 30)))
    (folder / "notes.txt").write_text("not an image")
    result = CliRunner().invoke(cli, ["predict", str(folder), "-m", str(predict_graph), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / "a_sal.png").size == (50, 30)
    assert Image.open(tmp_path / "out" / "b_normals.png").size == (30, 50)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.endswith("_panel.png")) == [
        "a_panel.png",
        "b_panel.png",
    ]


def _mtlora(args, cwd):
    proc = subprocess.run([sys.executable, "-m", "mtlora_deploy", *args], capture_output=True, text=True, cwd=cwd)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: _write(d, "float.tif", Image.fromarray(np.ones((8, 8), np.float32))), "32-bit float pixels"),
        (lambda d: _write(d, "neg.tif", Image.fromarray(np.full((8, 8), -5, np.int32))), "outside the 16-bit range"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "holds no image files"),
    ],
)
def test_unreadable_inputs_are_refused_in_one_line_with_nothing_written(predict_graph, tmp_path, make, message):
    good = _write(tmp_path, "good.png", Image.fromarray(_reference()))
    bad = make(tmp_path)
    code, err = _mtlora(
        ["predict", str(good), str(bad), "-m", str(predict_graph), "-o", str(tmp_path / "out")], tmp_path
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], err
    assert not (tmp_path / "out").exists()
