"""int8 calibration: bounded memory (measured in subprocesses), the range cache, the fidelity record.

The memory test calibrates the tiny model at 256 x 256 on 4 and on 32 images, each in a fresh
process, and compares the peaks; it first measures how many bytes of calibrated activations one image
produces, so it can show that keeping them (what ONNX Runtime's calibrators do) would have failed it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from mtlora_deploy.calib import make_precision_variant, read_precision_metadata
from mtlora_deploy.calib.cache import read_range_cache
from mtlora_deploy.calib.dataset import NpzImages, load_calibration, write_npz
from mtlora_deploy.calib.fidelity import FidelityMeter
from mtlora_deploy.calib.graph import select_nodes
from mtlora_deploy.calib.ranges import RangeSettings, entropy_threshold, gemm_activation_inputs
from mtlora_deploy.errors import ConfigError
from tests.conftest import randomize_lora, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore:calibration file .* recommends")
ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
from mtlora_deploy.calib.dataset import open_calibration
from mtlora_deploy.calib.ranges import RangeSettings, collect_ranges
images = open_calibration(sys.argv[2], "image", int(sys.argv[3]), min_images=1)
ranges = collect_ranges(sys.argv[1], images, "image", RangeSettings(method=sys.argv[4]), show_progress=False)
print(json.dumps({"tensors": len(ranges), "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _peak_rss_mib(onnx_path: Path, calib: Path, side: int, method: str) -> float:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(onnx_path), str(calib), str(side), method],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_kib"] / 1024


@pytest.fixture(scope="module")
def tiny_256(tmp_path_factory):
    """The tiny model exported at 256 x 256 (activations ~16x the 64 x 64 graph's) and 4 / 32 random images."""
    from mtlora_deploy.deploy.export import export_onnx

    model = tiny_model()
    randomize_lora(model)
    folder = tmp_path_factory.mktemp("tiny256")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, folder / "tiny256.onnx", image_size=256)
    rng = np.random.default_rng(0)
    for count in (4, 32):
        write_npz(folder / f"calib_{count}.npz", {"image": rng.standard_normal((count, 3, 256, 256), np.float32)})
    return folder


def _tensors_mib(model: onnx.ModelProto, names: list[str]) -> float:
    """Bytes of the tensors ``names`` for one 256 x 256 image (what a scan keeping them alive would hold)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    del model.graph.output[:]
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(names, {"image": np.zeros((1, 3, 256, 256), np.float32)})
    return sum(o.nbytes for o in outputs) / 2**20


def _activation_mib_per_image(onnx_path: Path) -> float:
    """Bytes of the calibrated tensors for one image (what a keep-everything calibrator stores per image)."""
    model = onnx.load(str(onnx_path))
    return _tensors_mib(model, gemm_activation_inputs(model))


def test_peak_memory_does_not_grow_with_the_image_count(tiny_256):
    per_image = _activation_mib_per_image(tiny_256 / "tiny256.onnx")
    would_grow = 28 * per_image  # 28 more images kept in memory
    assert would_grow > 200, f"test too weak: keeping 28 images would add only {would_grow:.0f} MiB"
    peaks = {
        n: _peak_rss_mib(tiny_256 / "tiny256.onnx", tiny_256 / f"calib_{n}.npz", 256, "percentile") for n in (4, 32)
    }
    assert peaks[32] - peaks[4] < max(40.0, 0.1 * would_grow), (peaks, would_grow)


ABSMAX_CHILD = """
import json, resource, sys
import numpy as np
import onnxruntime as ort
from mtlora_deploy.calib.dataset import open_calibration
from mtlora_deploy.calib.ranges import ArrayReader, activation_max_abs
images = open_calibration(sys.argv[2], "image", 256, min_images=1)
if sys.argv[3] == "forward":
    ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"]).run(None, {"image": images[:1]})
else:
    found = activation_max_abs(sys.argv[1], ArrayReader("image", images))
    assert len(found) > 100 and all(np.isfinite(v) for v in found.values())
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _absmax_peak_mib(onnx_path: Path, calib: Path, mode: str) -> float:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [sys.executable, "-c", ABSMAX_CHILD, str(onnx_path), str(calib), mode]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_kib"] / 1024


def _all_float_tensors_mib(onnx_path: Path) -> float:
    """Bytes of every float tensor one image makes (what a scan keeping them all alive would hold)."""
    from mtlora_deploy.calib.ranges import float_tensors

    model = onnx.load(str(onnx_path))
    initializers = {i.name for i in model.graph.initializer}
    return _tensors_mib(model, [n for n in float_tensors(model) if n not in initializers])


def test_fp16_range_scan_holds_one_forward_whatever_the_image_count(tiny_256):
    """The fp16/bf16 overflow scan (max |x| of every tensor): one image per run, each tensor freed once reduced."""
    graph = tiny_256 / "tiny256.onnx"
    everything = _all_float_tensors_mib(graph)
    assert everything > 150, f"test too weak: all tensors of one image are only {everything:.0f} MiB"
    forward = _absmax_peak_mib(graph, tiny_256 / "calib_4.npz", "forward")
    peaks = {n: _absmax_peak_mib(graph, tiny_256 / f"calib_{n}.npz", "scan") for n in (4, 32)}
    assert peaks[32] - peaks[4] < 40.0, peaks  # no batch of images in flight
    assert peaks[32] - forward < 0.4 * everything, (peaks, forward, everything)  # tensors are not kept alive


def test_range_cache_is_reused_for_other_exclusions_and_refused_for_another_graph(tiny_onnx, calib_npz, tmp_path):
    cache = tmp_path / "ranges.json"
    first = make_precision_variant(
        tiny_onnx,
        "int8",
        tmp_path / "a.onnx",
        calib_npz,
        tool="onnxruntime",
        calibration_method="max",
        calibration_cache=cache,
        fidelity_images=0,
    )
    record = read_precision_metadata(first)["int8_ranges"]
    assert record["reused"] is False and record["cache"] == str(cache) and record["images"] == 16
    stored = read_range_cache(cache)
    assert stored.graph_sha256 == read_precision_metadata(first)["precision_source_sha256"]
    assert stored.settings == {"method": "max"} and stored.calibration["split"] == "train"
    assert all(low == -high for low, high in stored.ranges.values())

    # another exclusion and no calibration file at all: the cache alone is enough
    second = make_precision_variant(
        tiny_onnx,
        "int8",
        tmp_path / "b.onnx",
        tool="onnxruntime",
        calibration_method="max",
        calibration_cache=cache,
        nodes_to_exclude=("Conv",),
        fidelity_images=0,
    )
    assert read_precision_metadata(second)["int8_ranges"]["reused"] is True
    excluded = set(read_precision_metadata(second)["precision_high_precision_nodes"])
    assert {n.name for n in onnx.load(str(tiny_onnx)).graph.node if n.op_type == "Conv"} <= excluded

    other = tmp_path / "other.onnx"
    model = onnx.load(str(tiny_onnx))
    model.doc_string = "another graph"  # any change of bytes is another graph
    onnx.save(model, str(other))
    with pytest.raises(ConfigError, match=r"ranges\.json does not fit other\.onnx: it was made for another graph"):
        make_precision_variant(
            other,
            "int8",
            tmp_path / "c.onnx",
            calib_npz,
            tool="onnxruntime",
            calibration_method="max",
            calibration_cache=cache,
            fidelity_images=0,
        )
    with pytest.raises(ConfigError, match=r"holds method=max ranges, method=entropy.*was asked for"):
        make_precision_variant(
            tiny_onnx,
            "int8",
            tmp_path / "d.onnx",
            calib_npz,
            tool="onnxruntime",
            calibration_method="entropy",
            calibration_cache=cache,
            fidelity_images=0,
        )
    assert not (tmp_path / "c.onnx").exists() and not (tmp_path / "d.onnx").exists()


def test_default_cache_beside_the_graph_is_reused(tiny_onnx, calib_npz, tmp_path):
    local = tmp_path / "g.onnx"
    local.write_bytes(tiny_onnx.read_bytes())
    for name in ("a", "b"):
        out = make_precision_variant(
            local,
            "int8",
            tmp_path / f"{name}.onnx",
            calib_npz,
            tool="onnxruntime",
            calibration_method="percentile",
            fidelity_images=0,
        )
    assert (tmp_path / "g.ranges-percentile.json").is_file()
    assert read_precision_metadata(out)["int8_ranges"]["reused"] is True


def test_int8_and_fp16_record_per_task_fidelity(tiny_onnx, calib_npz, tmp_path):
    int8 = make_precision_variant(
        tiny_onnx,
        "int8",
        tmp_path / "int8.onnx",
        calib_npz,
        tool="onnxruntime",
        calibration_method="max",
        fidelity_images=4,
    )
    fp16 = make_precision_variant(
        tiny_onnx, "fp16", tmp_path / "fp16.onnx", calib_npz, tool="onnxruntime", fidelity_images=4
    )
    for path, goal in ((int8, 99.0), (fp16, 99.9)):
        record = read_precision_metadata(path)["fidelity"]
        assert record["images"]["split"] == "val" and record["images"]["images"] == 4
        assert [record["tasks"][t]["metric"] for t in ("semseg", "human_parts", "sal", "normals")] == [
            "argmax agreement",
            "argmax agreement",
            "sign agreement",
            "mean angle",
        ]
        for _task, row in record["tasks"].items():
            assert set(row) == {"metric", "value", "goal", "max_relative", "maxF_difference", "ok"}
            assert (row["maxF_difference"] is None) == (_task != "sal")
            if row["metric"] != "mean angle":
                assert 0 <= row["value"] <= 100 and row["goal"] == goal
    fp16_tasks = read_precision_metadata(fp16)["fidelity"]["tasks"]
    assert fp16_tasks["semseg"]["value"] > 99.0 and fp16_tasks["normals"]["value"] < 1.0
    assert abs(fp16_tasks["sal"]["maxF_difference"]) < 1.0


def test_fidelity_meter_on_known_answers():
    meter = FidelityMeter(["semseg", "sal", "normals"], "logits")
    seg = np.zeros((1, 3, 2, 2), np.float32)
    seg[:, 0] = 1.0
    seg_out = seg.copy()
    seg_out[0, 2, 0, 0] = 5.0  # one of four pixels changes class
    normals = np.zeros((1, 3, 2, 2), np.float32)
    normals[:, 0] = 1.0
    normals_out = normals.copy()
    normals_out[0, :, 0, 0] = [0.0, 1.0, 0.0]  # one pixel turned by 90 degrees
    sal = np.array([[[[1.0, -1.0], [2.0, -2.0]]]], np.float32)
    meter.update(
        {"semseg": seg, "sal": sal, "normals": normals}, {"semseg": seg_out, "sal": -sal, "normals": normals_out}
    )
    rows = {r.task: r for r in meter.result("int8")}
    assert rows["semseg"].value == pytest.approx(75.0) and not rows["semseg"].ok
    assert rows["sal"].value == pytest.approx(0.0)
    # fp32 mask [1, 0, 1, 0], on which fp32 scores F 1; the variant's probabilities .27 .73 .12 .88 score at best
    # P 1/3, R 1/2, F 0.4 (t = 0.2)
    assert rows["sal"].maxF_difference == pytest.approx(60.0) and rows["semseg"].maxF_difference is None
    same = FidelityMeter(["sal"], "labels")
    probabilities = 1 / (1 + np.exp(-sal))
    same.update({"sal": probabilities}, {"sal": probabilities})
    assert same.result("fp16")[0].maxF_difference == pytest.approx(0.0, abs=1e-9)
    assert same.result("fp16")[0].value == pytest.approx(100.0)
    assert rows["normals"].value == pytest.approx(22.5) and rows["normals"].metric == "mean angle"


def test_fast_entropy_threshold_matches_onnxruntime():
    calibrate = pytest.importorskip("onnxruntime.quantization.calibrate")
    rng = np.random.default_rng(0)
    collector = calibrate.HistogramCollector("entropy", True, 256, 32, 99.99, "same")
    for scale in (1.0, 3.0):  # the second batch widens the histogram
        values = (rng.standard_normal(5000) * scale).astype(np.float32)
        values[:2] *= 15
        collector.collect({"t": values})
    histogram = collector.histogram_dict["t"]
    expected = collector.get_entropy_threshold(histogram, 32)
    assert entropy_threshold(histogram, 32) == (float(expected[0]), float(expected[1]))


def test_npz_images_read_slices_without_loading_everything(calib_npz):
    full = load_calibration(calib_npz, "image", 64)
    images = NpzImages(calib_npz, "image")
    try:
        assert len(images) == 16 and images.shape == (16, 3, 64, 64)
        np.testing.assert_array_equal(images[3:7], full[3:7])
        np.testing.assert_array_equal(images[14:20], full[14:])
    finally:
        images.close()


def test_exclude_patterns_and_typos(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert select_nodes(model, ["Conv"]) == convs
    assert select_nodes(model, [convs[0]]) == [convs[0]]
    with pytest.raises(ConfigError, match=r"`nodes_to_exclude` 'Conv_99x' matches no node.*did you mean"):
        select_nodes(model, ["Conv_99x"])


def test_range_settings_reject_unknown_methods():
    with pytest.raises(ConfigError, match="`calibration_method`: got 'kl'"):
        RangeSettings(method="kl")
    assert RangeSettings(method="max").images_per_run == 1 and RangeSettings(batch=4).images_per_run == 4


@pytest.mark.slow
def test_full_size_calibration_memory_is_flat(tmp_path):
    """Swin-T 448, mtlora-r64, 4 tasks (random init, merged): 2 vs 5 calibration images in fresh processes.

    Keeping each image's calibrated activations (~1.4 GB at 448) would add ~4 GB; the streaming pass adds ~0.
    """
    from mtlora_deploy.deploy.export import export_onnx
    from mtlora_deploy.model import build_model, resolve_config

    config = resolve_config("mtlora-r64", overrides={"tasks": ("semseg", "human_parts", "sal", "normals")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(build_model(config, warn_without_weights=False), tmp_path / "full.onnx", check=False)
    rng = np.random.default_rng(0)
    for count in (2, 5):
        write_npz(tmp_path / f"calib_{count}.npz", {"image": rng.standard_normal((count, 3, 448, 448), np.float32)})
    peaks = {n: _peak_rss_mib(tmp_path / "full.onnx", tmp_path / f"calib_{n}.npz", 448, "percentile") for n in (2, 5)}
    assert peaks[5] - peaks[2] < 300, peaks
    assert peaks[5] < 6 * 1024, peaks


def test_cli_export_int8_prints_fidelity_and_reuses_the_cache(calib_npz, tmp_path):
    from click.testing import CliRunner

    from mtlora_deploy.cli.main import cli
    from mtlora_deploy.model.checkpoint import save_checkpoint

    model = tiny_model()
    randomize_lora(model)
    save_checkpoint(model, tmp_path / "ckpt" / "model")
    args = [
        "export",
        str(tmp_path / "ckpt"),
        "-o",
        str(tmp_path / "m.int8.onnx"),
        "--precision",
        "int8",
        "--calib",
        str(calib_npz),
        "--calib-method",
        "max",
        "--fidelity-images",
        "2",
    ]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "int8 ranges (max, 16 images" in first.output and "computed in" in first.output
    assert "held-out images" in first.output and "argmax agreement" in first.output
    assert "fp32 minus variant: sal maxF" in " ".join(first.output.split())
    assert (tmp_path / "m.fp32.ranges-max.json").is_file() and (tmp_path / "m.fp32.onnx").is_file()  # -o is the int8
    second = CliRunner().invoke(cli, [*args, "--exclude", "Conv"], catch_exceptions=False)
    assert second.exit_code == 0 and ": reused, cache" in second.output, second.output
    assert "fidelity" in read_precision_metadata(tmp_path / "m.int8.onnx")
