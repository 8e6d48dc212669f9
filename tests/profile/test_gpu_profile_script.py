"""benchmarks/gpu_profile.py and its helpers (benchmarks/gpu_session.py, gpu_profile_summary.py) on the CPU: the smoke
run end to end as the lent GPU machine would run it (without the packages it lacks), its results folder, the time
budget and hard deadlines, reference ratios only on the reference's GPU, inductor's CUDA-graph skip counter, the
step peak that counts a CUDA-graph pool, and the environment record."""

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_profile.py"
# What the lent GPU machine does not have (it has torch, timm, onnx, onnxruntime, safetensors, click, rich, scipy,
# matplotlib, pytest, pytest-xdist and their dependencies).
ABSENT_ON_GPU_MACHINE = ("yaml", "skimage", "polygraphy", "onnxscript", "tensorboard", "tensorrt", "tensorrt_rtx")
EXPECTED_RESULTS = {
    "gpu_summary.json",
    "gpu_summary.md",
    "eager_profile.json",
    "compiled_profile.json",
    "cuda_tests.log",
}

sys.path.insert(0, str(ROOT))
from benchmarks import gpu_profile_summary as summaries  # noqa: E402
from benchmarks import gpu_session as session  # noqa: E402


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _hiding(tmp_path: Path, modules) -> dict:
    """Environment for a subprocess in which ``modules`` look not installed (find_spec None, import fails): a
    sitecustomize on PYTHONPATH wraps every meta-path finder. It reaches the script's own subprocesses too."""
    folder = tmp_path / "hide"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            HIDDEN = {set(modules)!r}

            class Hidden:
                def __init__(self, finder):
                    self.finder = finder

                def find_spec(self, name, path=None, target=None):
                    if name.partition(".")[0] in HIDDEN:
                        return None
                    find = getattr(self.finder, "find_spec", None)
                    return None if find is None else find(name, path, target)

                def __getattr__(self, name):
                    return getattr(self.finder, name)

            sys.meta_path[:] = [Hidden(f) for f in sys.meta_path]
            """
        )
    )
    return {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*")]


def test_smoke_run_without_the_packages_the_gpu_machine_lacks_hands_back_flat_results(tmp_path):
    """The whole smoke run in a fresh interpreter that cannot import pyyaml, scikit-image, polygraphy, onnxscript,
    tensorboard or TensorRT; a compile backend that does not exist makes every compiled step fail (recorded)."""
    out, work = tmp_path / "out", tmp_path / "work"
    command = [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--work", str(work)]
    command += ["--compile-backend", "no-such-backend", "--sections", "eager,training,cuda_tests,compiled"]
    began = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, env=_hiding(tmp_path, ABSENT_ON_GPU_MACHINE), capture_output=True, text=True, timeout=900
    )
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-3000:]
    files = _files(out)
    assert {p.name for p in files} == EXPECTED_RESULTS and all(p.is_file() for p in files)  # flat, <= 8
    assert (work / "training_run" / "data").is_dir() and (work / "eager" / "profile.json").is_file()  # the work

    summary = json.loads((out / "gpu_summary.json").read_text())
    statuses = {name: s["status"] for name, s in summary["sections"].items()}
    assert statuses == {name: "done" for name in ("eager", "training", "cuda_tests", "compiled")}, statuses
    assert summary["smoke"] is True and summary["elapsed_s"] < summary["budget_s"]
    env = summary["environment"]
    assert env["torch"] == torch.__version__ and "c_compiler" in env and summary["device_name"].startswith("cpu")
    assert summary["training"]["eager"]["images_per_s"] > 0 and summary["training"]["eager"]["optimizer"] == "AdamW"
    assert any("no-such-backend" in n for n in summary["notes"])  # each failing compile is recorded, not raised
    assert all(step["status"] == "done" for step in summary["sections"]["compiled"]["steps"].values())

    rows = {r["ours"]: r for r in summary["reference_comparison"]}
    fp32 = rows["merged, eager fp32 largest batch (img/s)"]
    assert fp32["value"] > 0 and fp32["reference_value"] == 263 and fp32["run_as"] == "eager"
    assert fp32["compared"] is False and fp32["speedup_vs_reference"] is None  # a CPU is not the reference's H100
    assert "this run on cpu" in fp32["note"] and rows["merged, eager fp16 bs1 (ms)"]["value"] is None
    assert all(line.startswith("[cpu") for line in summary["ratios"]) and summary["ratios"]

    cuda = {t["test"]: t for t in summary["cuda_tests"]["tests"]}  # run with the same packages hidden
    assert summary["cuda_tests"]["counts"]["skipped"] >= 3 and summary["cuda_tests"]["counts"]["failed"] == 0
    assert all(t["reason"] for t in cuda.values())  # every cuda test says why it did not run
    broken = cuda["tests.engines.test_onnxruntime_backend"]  # its module imports the ONNX export (onnxscript)
    assert broken["outcome"] == "error" and "No module named 'onnxscript'" in broken["reason"]
    assert "pytest -m cuda" in (out / "cuda_tests.log").read_text()

    profile = json.loads((out / "eager_profile.json").read_text())
    assert {"single_pass", "merged", "bare_backbone", "per_task", "without:semseg"} <= {
        m["role"] for m in profile["measurements"]
    }
    assert all(m["gmac_per_image"] > 0 for m in profile["measurements"])
    assert profile["environment"]["float32_matmul_precision"] == "highest" and profile["run"]["tf32"] is False
    markdown = (out / "gpu_summary.md").read_text()
    for heading in ("## Sections", "## Against the reference table", "## Targets", "## Measurements", "## cuda-marked"):
        assert heading in markdown
    print(f"smoke run: {seconds:.1f} s")


def test_missing_packages_stop_the_script_with_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path / "out")],
        cwd=ROOT,
        env=_hiding(tmp_path, ("timm", "scipy")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert "missing Python packages: timm, scipy" in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget-s", "600"], "--budget-s: got 600"),
        (["--sections", "eager,warp"], "--sections: got 'warp'"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, argv, message):
    assert _load_script().main(["--smoke", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_budget_and_deadline_stop_sections_and_keep_what_was_measured(tmp_path, monkeypatch):
    """A fake clock: the eager step "takes" 200 s of a 300 s budget; the training step is hit by the section's
    deadline signal (SIGALRM) halfway and "takes" 150 s; the cuda tests then have no time left. What was measured
    before is written; the summary says what stopped where."""
    script, now = _load_script(), [0.0]
    measure_step = script.measure_step

    def slow_step(*args, **kwargs):
        result = measure_step(*args, **kwargs)
        now[0] += 200
        return result

    def cut_training(run, compiled):
        now[0] += 150
        signal.raise_signal(signal.SIGALRM)  # what the section's hard deadline delivers
        raise AssertionError("the deadline must interrupt the step")

    monkeypatch.setattr(script, "measure_step", slow_step)
    monkeypatch.setattr(script, "measure_training", cut_training)
    out, handler = tmp_path / "out", signal.getsignal(signal.SIGALRM)
    argv = ["--smoke", "--out", str(out), "--budget-s", "300", "--sections", "eager,training,cuda_tests"]
    assert script.main(argv, clock=lambda: now[0]) == 0
    summary = json.loads((out / "gpu_summary.json").read_text())
    sections = summary["sections"]
    assert sections["eager"]["status"] == "done" and sections["eager"]["steps"]["fp32"]["seconds"] == 200
    assert sections["training"]["status"].startswith("stopped at its deadline")
    assert sections["training"]["steps"]["eager"]["status"] == "cut at the deadline"
    assert sections["cuda_tests"]["status"].startswith("not started: 0 s left")
    assert summary["elapsed_s"] == 350 and summary["cuda_tests"] == {}
    eager = json.loads((out / "eager_profile.json").read_text())
    assert len(eager["measurements"]) >= 8 and {p.name for p in _files(out)} <= EXPECTED_RESULTS
    assert signal.getsignal(signal.SIGALRM) is handler and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_section_hard_deadline_cuts_the_running_step_and_keeps_the_earlier_ones():
    """Real time: a step that would sleep 30 s is interrupted at the section's 0.5 s deadline."""
    done, flushed = [], []
    section = session.Section(
        "s",
        [
            session.Step("quick", lambda: done.append("quick")),
            session.Step("long", lambda: time.sleep(30) or done.append("long")),
            session.Step("after", lambda: done.append("after")),
        ],
        cap_s=0.5,
    )
    began = time.monotonic()
    record = session.run_section(section, session.Budget(100), 0.0, lambda: flushed.append(list(done)))
    assert time.monotonic() - began < 5 and done == ["quick"] and flushed == [["quick"]]
    assert (
        record["status"] == "stopped at its deadline (0.5 s)"
        and record["steps"]["long"]["status"] == "cut at the deadline"
    )
    assert record["steps"]["after"]["status"].startswith("not started")


def test_a_deadline_caught_inside_a_step_still_ends_the_section():
    """Library code that catches the timeout (a compile turning it into its own error) does not hide the deadline:
    the step is recorded as cut, what it returned is kept, and the next step does not start."""

    def swallowing():
        try:
            time.sleep(30)
        except BaseException:  # noqa: BLE001  (what some library code does)
            return {"measurements": 0}

    section = session.Section(
        "s", [session.Step("compile", swallowing), session.Step("next", lambda: time.sleep(30))], cap_s=0.3
    )
    record = session.run_section(section, session.Budget(100), 0.0, lambda: None)
    assert record["status"].startswith("stopped at its deadline") and record["steps"]["next"]["status"].startswith(
        "not started"
    )
    assert record["steps"]["compile"]["status"] == "cut at the deadline (the interrupted code caught it; then: done)"
    assert record["steps"]["compile"]["measurements"] == 0


def test_steps_need_their_time_and_failures_are_recorded():
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731

    def takes(seconds):
        return lambda: now.__setitem__(0, now[0] + seconds)

    def broken():
        raise RuntimeError("inductor said no")

    section = session.Section(
        "s", [session.Step("a", broken), session.Step("b", takes(70)), session.Step("c", takes(1), min_s=40)], 100
    )
    record = session.run_section(section, session.Budget(1000, clock), 0.0, lambda: None)
    steps = record["steps"]
    assert steps["a"]["status"] == "failed: RuntimeError: inductor said no" and steps["b"]["status"] == "done"
    assert steps["c"]["status"] == "not started: 30 s left, needs 40 s" and record["status"] == "done"
    late = session.Section("late", [session.Step("x", takes(1))], cap_s=100, min_s=50)
    record = session.run_section(late, session.Budget(1000, clock), 960.0, lambda: None)
    assert record["status"] == "not started: 40 s left (after 960 s kept for later sections), needs 50 s"


def test_the_results_folder_is_flat_and_holds_at_most_eight_files(tmp_path):
    folder = session.ResultsFolder(tmp_path)
    for index in range(8):
        folder.write_text(f"f{index}.txt", "x")
    folder.write_json("f0.txt", {"again": True})  # rewriting a name is not a new file
    with pytest.raises(ValueError, match="8 result files already"):
        folder.write_text("ninth.txt", "x")
    with pytest.raises(ValueError, match="no folders"):
        session.ResultsFolder(tmp_path / "other").write_text("eager/profile.json", "x")
    assert len(list(tmp_path.iterdir())) == 8 + 1 and json.loads((tmp_path / "f0.txt").read_text()) == {"again": True}


def _row(role, backend, precision, batch, median_ms, **settings):
    return {
        "role": role,
        "backend": backend,
        "precision": precision,
        "batch": batch,
        "median_ms": median_ms,
        "throughput_images_per_s": batch * 1000 / median_ms,
        "settings": {"backend": {"compile_mode": "reduce-overhead"}, **settings},
    }


@pytest.mark.parametrize(
    ("gpu", "compared"),
    [
        ("NVIDIA H100 80GB HBM3", True),
        ("NVIDIA H100 PCIe", True),
        ("NVIDIA H200", False),
        ("NVIDIA GH200 480GB", False),
    ],
)
def test_reference_ratios_only_on_the_reference_gpu_and_every_row_names_the_gpu(gpu, compared):
    rows = [
        _row("merged", "torch", "fp16", 1, 10.5),
        _row("merged", "torch-compiled", "fp16", 32, 16.0, cudagraph_skips=0),
        _row("merged", "torch-compiled", "fp16", 1, 2.0, cudagraph_skips=3),
    ]
    env = {"gpu": gpu}
    out = summaries.reference_rows(rows, env, 1, 32)
    assert all(r["gpu"] == gpu for r in out) and all(r["compared"] is compared for r in out)
    by_name = {r["ours"]: r for r in out}
    eager = by_name["merged, eager fp16 bs1 (ms)"]
    graphs = by_name["merged, compiled+graphs fp16 bs1 (ms)"]
    assert graphs["run_as"] == "compiled (CUDA graphs skipped: 3)"  # not silently "compiled+graphs"
    assert by_name["merged, compiled+graphs fp16 largest batch (img/s)"]["run_as"] == "compiled+graphs"
    targets = summaries.target_rows({}, rows, {"eager": {"images_per_s": 322.0}}, env, 32)
    assert all(t["gpu"] == gpu for t in targets)
    compiled_target, training_target = targets[-2], targets[-1]
    if compared:
        assert eager["speedup_vs_reference"] == pytest.approx(21.0 / 10.5) and eager["note"] is None
        assert compiled_target["value"] == pytest.approx(2000 / 1091) and compiled_target["met"] is False
        assert training_target["value"] == pytest.approx(2.0) and training_target["met"] is True
    else:
        assert eager["speedup_vs_reference"] is None and eager["value"] == 10.5
        assert eager["note"] == f"reference measured on H100; this run on {gpu}: not compared"
        assert compiled_target["value"] is None and training_target["met"] is None and gpu in training_target["note"]


def test_cudagraph_skips_are_read_from_inductors_counter_with_their_reasons():
    from torch._dynamo.utils import counters

    with session.CudagraphSkips() as skips:
        counters["inductor"]["cudagraph_skips"] += 2
        logging.getLogger(session.SKIP_LOGGERS[0]).warning("skipping cudagraphs due to mutated inputs (1 instances)")
        logging.getLogger("elsewhere").warning("skipping cudagraphs due to nothing we listen to")
    assert skips.count == 2 and skips.reasons == ["skipping cudagraphs due to mutated inputs (1 instances)"]
    with session.CudagraphSkips() as none:
        pass
    assert none.count == 0 and none.reasons == []


@pytest.mark.slow
def test_inductor_bumps_the_counter_the_reader_reads():
    """Real inductor (about 15-45 s on this CPU): reduce-overhead on the CPU has no CUDA graphs to make, and inductor
    counts that as a skip under the key ``cudagraph_skip_count`` reads, in the installed torch."""
    compiled = torch.compile(lambda x: (x * 2).sin() + 1, mode="reduce-overhead")
    with session.CudagraphSkips() as skips:
        compiled(torch.randn(8))
    assert skips.count == 1


class FakeAllocator:
    """A caching allocator's counters as torch.cuda reports them (bytes allocated now, peak since the last reset,
    and reserved), driven by ``alloc`` / ``free``."""

    def __init__(self) -> None:
        self.now = self.peak = self.held = self.held_peak = 0

    def alloc(self, size: int) -> None:
        self.now += size
        self.held = max(self.held, self.now)
        self.peak, self.held_peak = max(self.peak, self.now), max(self.held_peak, self.held)

    def free(self, size: int) -> None:
        self.now -= size

    def reset_peak(self) -> None:
        self.peak, self.held_peak = self.now, self.held

    def allocated(self) -> int:
        return self.now

    def peak_allocated(self) -> int:
        return self.peak

    def reserved(self) -> int:
        return self.held

    def peak_reserved(self) -> int:
        return self.held_peak


def test_the_step_peak_counts_the_graph_pool_that_a_per_round_peak_misses():
    allocator = FakeAllocator()
    allocator.alloc(1000)  # what earlier steps left resident
    with session.StepPeak(allocator) as step:
        allocator.alloc(300)  # weights moved to the device
        allocator.alloc(5000)  # warm-up: the CUDA-graph pool, kept for the replays
        allocator.reset_peak()  # the profile's per-round peak starts here (PeakMemory)
        round_start = allocator.allocated()
        allocator.alloc(40)  # a replay's output copy
        allocator.free(40)
        per_round = allocator.peak_allocated() - round_start
        allocator.free(5300)  # the step closes its model
    assert per_round == 40 and step.allocated_bytes == 5340 and step.absolute_bytes == 6340
    assert step.reserved_bytes == 5340 and step.to_dict()["step_peak_allocated_bytes"] == 5340
    with session.StepPeak(None) as cpu:
        pass
    assert cpu.allocated_bytes is None and cpu.to_dict()["step_peak_reserved_bytes"] is None


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n", "550.54.15"),
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16)\n",
            "580.65.06",
        ),
        ("no driver here", None),
    ],
)
def test_the_driver_version_is_read_from_the_kernel_module_line(text, version):
    assert session.parse_proc_driver_version(text) == version


def test_cuda_versions_read_as_text_and_the_environment_names_its_tools():
    assert session.cuda_version_text(13000) == "13.0" and session.cuda_version_text(12080) == "12.8"
    assert session.cuda_version_text(None) is None
    env = session.gpu_environment({"cpu": "x86_64"})
    assert "c_compiler" in env and "triton" in env and session.device_name(env) == "cpu (x86_64)"


def test_junit_results_become_outcomes_with_reasons(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.a" name="test_ok" time="0.1"/>'
        '<testcase classname="tests.a" name="test_skip"><skipped type="pytest.skip" message="no CUDA GPU">x</skipped>'
        "</testcase>"
        '<testcase classname="tests.b" name="test_bad"><failure message="assert 1 == 2&#10;more">tb</failure>'
        "</testcase>"
        '<testcase classname="" name="tests.c"><error message="collection failure">tests/c.py:3: in &lt;module&gt;\n'
        "E   ModuleNotFoundError: No module named 'onnxscript'</error></testcase>"
        "</testsuite></testsuites>"
    )
    assert session.parse_junit(path) == [
        {"test": "tests.a::test_ok", "outcome": "passed", "reason": ""},
        {"test": "tests.a::test_skip", "outcome": "skipped", "reason": "no CUDA GPU"},
        {"test": "tests.b::test_bad", "outcome": "failed", "reason": "assert 1 == 2"},
        {
            "test": "tests.c",
            "outcome": "error",
            "reason": "collection failure: ModuleNotFoundError: No module named 'onnxscript'",
        },
    ]
    command = session.cuda_test_command(ROOT, path)
    assert command[1:5] == ["-m", "pytest", "-m", "cuda"] and "tests/profile/test_gpu_profile_script.py" in command


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_on_cuda_the_environment_is_complete_and_fp16_eager_matches_the_cpu():
    """The first thing the lent GPU runs (seconds): driver and CUDA versions are found, the tiny model's fp16 eager
    outputs on the GPU match fp32 on the CPU, and the allocator readers see its memory."""
    from mtlora_deploy.engines.torch_eager import TorchEagerBackend
    from tests.conftest import randomize_lora, tiny_model

    env = session.gpu_environment({"gpu": torch.cuda.get_device_name()})
    assert env["nvidia_driver"] and env["cuda_runtime"] and env["cuda_driver_supports"] and env["gpu_memory_gb"] > 0
    model = tiny_model("mtlora-r16")
    randomize_lora(model)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cpu = TorchEagerBackend(model, device="cpu").infer(images)
    cpu = {k: v.clone() for k, v in cpu.items()}
    with session.StepPeak(session.CudaMemory(torch.device("cuda"))) as peak:
        gpu = TorchEagerBackend(model, device="cuda", dtype=torch.float16).infer(images.cuda())
        torch.cuda.synchronize()
    for task, value in cpu.items():
        assert torch.allclose(gpu[task].float().cpu(), value, atol=5e-2, rtol=5e-2), task
    assert peak.allocated_bytes > 0 and peak.absolute_bytes >= peak.allocated_bytes
