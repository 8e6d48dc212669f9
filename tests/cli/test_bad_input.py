"""Bad input and broken files, as a hostile user tries them: one line naming what is wrong, exit 1 (2 for usage
errors), no traceback, nothing half-written. Each case runs the real ``mtlora`` entry point in this process."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtlora_deploy.cli import main as cli_main
from mtlora_deploy.trainer.data import make_synthetic_dataset
from tests.conftest import TINY_CLI as TINY


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A dataset, a trained tiny run and a few broken files, shared by every case (cases copy what they break)."""
    root = tmp_path_factory.mktemp("bad")
    data = make_synthetic_dataset(root / "data", 12, seed=0, image_size=(64, 80))
    run = root / "run"
    code, _, err = _mtlora(
        [
            "train",
            "--preset",
            "mtlora-r16",
            "--tasks",
            "semseg,sal",
            "--data",
            str(data),
            *TINY,
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "-o",
            str(run),
        ]
    )
    assert code == 0, err
    (root / "notes.txt").write_text("hello, not a model\n")
    (root / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "garbage.npz").write_bytes(np.random.default_rng(1).bytes(4096))
    (root / "garbage.onnx").write_bytes(np.random.default_rng(2).bytes(4096))
    (root / "a_file").write_text("x")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "ok.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "config_typo.yaml").write_text("model:\n  task_agnostic_rnk: 4\n")
    (root / "config_type.yaml").write_text("model:\n  lora_scale: four\n")
    (root / "config_section.yaml").write_text("model:\n  image_size: 64\ntrian:\n  epochs: 1\n")
    return {"root": root, "data": data, "run": run}


def _mtlora(args: list[str]) -> tuple[int, str, str]:
    """Run ``mtlora ARGS`` through the real entry point; (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["mtlora", *args]
    code = 0
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli_main.main()  # the command's own output policy applies inside and is undone after it
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def _copy_run(world, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(world["run"], run, symlinks=True)
    return run


def _truncate(path: Path, keep: int = 100) -> None:
    real = path.resolve()
    data = real.read_bytes()
    real.unlink()  # break the hard link to best/last first: only this file is damaged
    real.write_bytes(data[:keep])


def _train(world, *extra, data=None, out="out"):
    return [
        "train",
        "--preset",
        "mtlora-r16",
        "--tasks",
        "semseg,sal",
        "--data",
        str(data or world["data"]),
        *TINY,
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--workers",
        "0",
        *extra,
        "-o",
        out,
    ]


def _corrupt_data(world, tmp_path, what: str) -> Path:
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    val_id = (data / "ImageSets" / "Context" / "val.txt").read_text().split()[0]
    train_id = (data / "ImageSets" / "Context" / "train.txt").read_text().split()[0]
    if what == "val_image":
        image = data / "JPEGImages" / f"{val_id}.jpg"
        image.write_bytes(image.read_bytes()[:200])
    else:
        label = data / "semseg" / "VOC12" / f"{train_id}.png"
        array = np.asarray(Image.open(label)).copy()
        array[0, 0] = 99
        Image.fromarray(array).save(label)
    return data


# (id, setup(world, tmp_path) -> args, exit code, text the error line must contain, paths that must not exist)
CASES = [
    (
        "set-typo",
        lambda w, t: _train(w, "--set", "task_agnostic_rnk=4", out=str(t / "o")),
        1,
        "--set: unknown model config key 'task_agnostic_rnk'; did you mean 'task_agnostic_rank'?",
        ["o"],
    ),
    (
        "info-set-typo",
        lambda w, t: ["info", "--preset", "mtlora-r16", "--set", "task_agnostic_rnk=4"],
        1,
        "did you mean 'task_agnostic_rank'?",
        [],
    ),
    (
        "train-set-typo",
        lambda w, t: _train(w, "--train-set", "batchsize=2", out=str(t / "o")),
        1,
        "--train-set: unknown train config key 'batchsize'; did you mean 'batch_size'?",
        ["o"],
    ),
    (
        "yaml-typo",
        lambda w, t: _train(w, "--config", str(w["root"] / "config_typo.yaml"), out=str(t / "o")),
        1,
        "config_typo.yaml: unknown model config key 'task_agnostic_rnk'",
        ["o"],
    ),
    (
        "yaml-section",
        lambda w, t: _train(w, "--config", str(w["root"] / "config_section.yaml"), out=str(t / "o")),
        1,
        "unknown section 'trian'; did you mean 'train'?",
        ["o"],
    ),
    (
        "yaml-type",
        lambda w, t: _train(w, "--config", str(w["root"] / "config_type.yaml"), out=str(t / "o")),
        1,
        "lora_scale: got 'four' (str), expected a number",
        ["o"],
    ),
    (
        "set-words",
        lambda w, t: _train(w, "--set", "image_size=sixty-four", out=str(t / "o")),
        1,
        "image_size: got 'sixty-four' (str), expected an integer",
        ["o"],
    ),
    (
        "set-float",
        lambda w, t: _train(w, "--set", "image_size=64.0", out=str(t / "o")),
        1,
        "image_size: got 64.0 (float), expected an integer",
        ["o"],
    ),
    (
        "image-size-export-rule",
        lambda w, t: _train(w, "--set", "image_size=96", out=str(t / "o")),
        1,
        "image_size: got 96; the token grids",
        ["o"],
    ),
    ("epochs-0", lambda w, t: _train(w, "--epochs", "0", out=str(t / "o")), 2, "--epochs", ["o"]),
    ("workers-negative", lambda w, t: _train(w, "--workers", "-1", out=str(t / "o")), 2, "--workers", ["o"]),
    ("run-dir-in-dataset", lambda w, t: _train(w, out=str(w["data"] / "runs")), 1, "is inside the dataset folder", []),
    (
        "corrupt-val-image",
        lambda w, t: _train(w, data=_corrupt_data(w, t, "val_image"), out=str(t / "o")),
        1,
        "(split 'val', needed by the input image) is corrupt or truncated",
        ["o/checkpoints", "o/.checkpoints"],
    ),
    (
        "label-out-of-range",
        lambda w, t: _train(w, data=_corrupt_data(w, t, "label"), out=str(t / "o")),
        1,
        "(task 'semseg') has label value 99; expected 0..20 or 255",
        ["o/checkpoints", "o/.checkpoints"],
    ),
    (
        "label-out-of-range-in-a-worker",
        lambda w, t: [
            *_train(w, data=_corrupt_data(w, t, "label"), out=str(t / "o"))[:-2],
            "--workers",
            "1",
            "-o",
            str(t / "o"),
        ],
        1,
        "(task 'semseg') has label value 99; expected 0..20 or 255",
        ["o/checkpoints", "o/.checkpoints"],
    ),
    (
        "evaluate-num-images-0",
        lambda w, t: [
            "evaluate",
            str(w["run"]),
            "--data",
            str(w["data"]),
            "--num-images",
            "0",
            "-o",
            str(t / "e.json"),
        ],
        2,
        "--num-images",
        ["e.json"],
    ),
    (
        "evaluate-batch-size-0",
        lambda w, t: ["evaluate", str(w["run"]), "--data", str(w["data"]), "--batch-size", "0"],
        2,
        "--batch-size",
        [],
    ),
    (
        "evaluate-bad-baseline",
        lambda w, t: [
            "evaluate",
            str(w["run"]),
            "--data",
            str(w["data"]),
            "--baseline",
            "semseg=abc",
            "-o",
            str(t / "e.json"),
        ],
        1,
        "--baseline semseg=abc: 'abc' is not a number",
        ["e.json"],
    ),
    (
        "evaluate-truncated-json",
        lambda w, t: ["evaluate", str(_broken_run(w, t, "best.json")), "--data", str(w["data"])],
        1,
        "best.json is truncated (100 of",
        [],
    ),
    (
        "info-truncated-safetensors",
        lambda w, t: ["info", "--checkpoint", str(_broken_run(w, t, "best.safetensors"))],
        1,
        "best.safetensors is truncated (100 of",
        [],
    ),
    (
        "merge-truncated-safetensors",
        lambda w, t: ["merge", str(_broken_run(w, t, "best.safetensors")), "-o", str(t / "merged")],
        1,
        "best.safetensors is truncated (100 of",
        ["merged"],
    ),
    ("profile-missing", lambda w, t: ["profile", str(t / "nope.onnx")], 1, "nope.onnx does not exist", []),
    ("profile-text-file", lambda w, t: ["profile", str(w["root"] / "notes.txt")], 1, "unknown kind of file '.txt'", []),
    (
        "profile-garbage-onnx",
        lambda w, t: ["profile", str(w["root"] / "garbage.onnx")],
        1,
        "garbage.onnx is not a valid ONNX model",
        [],
    ),
    (
        "export-under-a-file",
        lambda w, t: ["export", str(w["run"]), "-o", str(w["root"] / "a_file" / "m.onnx")],
        1,
        "a_file is a file, so no folder can be made under it",
        [],
    ),
    (
        "export-int8-without-calib",
        lambda w, t: ["export", str(w["run"]), "-o", str(t / "m.onnx"), "--precision", "int8"],
        1,
        "--precision int8 needs --calib FILE.npz",
        ["m.onnx"],
    ),
    (
        "export-garbage-calib",
        lambda w, t: [
            "export",
            str(w["run"]),
            "-o",
            str(t / "m.onnx"),
            "--precision",
            "int8",
            "--calib",
            str(w["root"] / "garbage.npz"),
        ],
        1,
        "garbage.npz is not an .npz archive",
        ["m.onnx", "m.fp32.onnx"],
    ),
    (
        "import-random-bytes",
        lambda w, t: [
            "import-checkpoint",
            str(w["root"] / "random.bin"),
            "--preset",
            "mtlora-r16",
            *TINY,
            "-o",
            str(t / "imp"),
        ],
        1,
        "random.bin is not a PyTorch checkpoint",
        ["imp"],
    ),
    (
        "import-text-file",
        lambda w, t: [
            "import-checkpoint",
            str(w["root"] / "notes.txt"),
            "--preset",
            "mtlora-r16",
            *TINY,
            "-o",
            str(t / "imp"),
        ],
        1,
        "notes.txt is not a PyTorch checkpoint",
        ["imp"],
    ),
    (
        "predict-missing-input",
        lambda w, t: [
            "predict",
            str(w["root"] / "ok.png"),
            str(t / "missing.png"),
            "-m",
            str(w["run"]),
            "-o",
            str(t / "pred"),
        ],
        1,
        "missing.png does not exist",
        ["pred"],
    ),
    (
        "predict-broken-input",
        lambda w, t: [
            "predict",
            str(w["root"] / "ok.png"),
            str(w["root"] / "broken.jpg"),
            "-m",
            str(w["run"]),
            "-o",
            str(t / "pred"),
        ],
        1,
        "broken.jpg could not be read",
        ["pred"],
    ),
    (
        "predict-same-file-twice",
        lambda w, t: [
            "predict",
            str(w["root"] / "ok.png"),
            str(w["root"] / "ok.png"),
            "-m",
            str(w["run"]),
            "-o",
            str(t / "pred"),
        ],
        1,
        "is given twice",
        ["pred"],
    ),
]


def _broken_run(world, tmp_path, name: str) -> Path:
    run = _copy_run(world, tmp_path)
    _truncate(run / "checkpoints" / name)
    return run


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(world, tmp_path, case):
    _, setup, expected_code, text, absent = case
    code, _, err = _mtlora(setup(world, tmp_path))
    assert code == expected_code, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and text in errors[0], err
    if expected_code == 1:  # one line, beside the toolkit's one-line warnings of the work done before (random init)
        assert all(line.startswith("warning: ") for line in err.strip().splitlines() if line != errors[0]), err
    for name in absent:
        assert not (tmp_path / name).exists(), name
    assert not list(tmp_path.rglob("*.tmp"))


def test_debug_raises_the_error_itself():
    from mtlora_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'task_agnostic_rank'"):
        _mtlora(["--debug", "info", "--preset", "mtlora-r16", "--set", "task_agnostic_rnk=4"])


def test_predict_keeps_inputs_with_the_same_name_apart(world, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(world["root"] / "ok.png", tmp_path / folder / "cat.png")
    code, _, err = _mtlora(
        [
            "predict",
            str(tmp_path / "a" / "cat.png"),
            str(tmp_path / "b" / "cat.png"),
            "-m",
            str(world["run"]),
            "-o",
            str(tmp_path / "pred"),
        ]
    )
    assert code == 0, err
    assert (tmp_path / "pred" / "a_cat_panel.png").is_file() and (tmp_path / "pred" / "b_cat_panel.png").is_file()
