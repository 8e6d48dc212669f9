"""Full-size TensorRT-RTX plans per precision on a CPU: plan bytes, build time, peak memory and accuracy cost.

The Swin-T 448 mtlora-r64 four-task graph of ``full_size_graph.py`` (random init, LoRA B ~ N(0, 0.02), merged) is
made into its fp16 / fp8 / int8-wo / int4-wo variants with ``make_precision_variant`` (fp8 calibrated with max
ranges on ``--calib-images`` images of the TRAIN split of a synthetic set drawn at 448, every variant compared with
fp32 on ``--holdout-images`` images of its VAL split), then each variant is built once per target by its own
``mtlora build-engine ... --runtime tensorrt-rtx --target smXX --batch 1:8:32`` process under GNU time (peak RSS).
Besides the plan's bytes the table splits them into the weights and other constants the plan's layer list names
(``layer_summary.constant_bytes``) and the rest (mostly the CUDA source TensorRT-RTX compiles when the plan loads).

Every step is skipped when its output exists (a rerun resumes). Usage:

    PYTHONPATH=. python benchmarks/precision_plans.py --work runs/full -o benchmarks/results/precision_plans.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

PRECISIONS = ("fp16", "fp8", "int8-wo", "int4-wo")
TARGETS = ("sm89", "sm120")
GOALS = {"int8-wo": 0.6, "int4-wo": 0.4}  # plan bytes / the fp16 plan's (issue 24)


def _data(work: Path, calib_images: int, holdout_images: int) -> tuple[Path, Path]:
    """Calibration (train split) and held-out (val split) images at 448 from a synthetic set."""
    from mtlora_deploy.calib.dataset import draw_calibration_set
    from mtlora_deploy.trainer.data import make_synthetic_dataset

    calib, holdout = work / f"calib_train_{calib_images}.npz", work / f"holdout_val_{holdout_images}.npz"
    if not (calib.is_file() and holdout.is_file()):
        total = 4 * max(calib_images, holdout_images)  # a quarter goes to val
        root = make_synthetic_dataset(work / "synthetic_448", total, seed=0, image_size=(448, 448))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "fewer than 500 images": deliberate here
            draw_calibration_set(root, "train", calib_images, 448, 0, calib)
            draw_calibration_set(root, "val", holdout_images, 448, 0, holdout)
    return calib, holdout


def _variants(fp32: Path, work: Path, calib: Path, holdout: Path, images: int) -> dict[str, dict]:
    from mtlora_deploy.calib.precision import make_precision_variant, read_precision_metadata

    made = {}
    for precision in PRECISIONS:
        path, start = work / f"swin_t_{precision}.onnx", time.perf_counter()
        if not path.is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                make_precision_variant(
                    fp32,
                    precision,
                    path,
                    calib if precision == "fp8" else None,
                    min_images=1,
                    fidelity_images=images,
                    holdout=holdout,
                    show_progress=False,
                )
            print(f"{precision}: made {path} in {time.perf_counter() - start:.0f} s", flush=True)
        record = read_precision_metadata(path)
        made[precision] = {"onnx": path, "onnx_bytes": path.stat().st_size, "fidelity": record.get("fidelity")}
    return made


def _build(precision: str, onnx_path: Path, target: str, work: Path) -> dict:
    plan = work / "plans" / f"swin_t_{precision}_{target}.plan"
    cmd = [
        *("/usr/bin/time", "-v", sys.executable, "-m", "mtlora_deploy", "build-engine", str(onnx_path)),
        *("--precision", precision, "--runtime", "tensorrt-rtx", "--target", target, "--batch", "1:8:32"),
        *("-o", str(plan)),
    ]
    if not Path(f"{plan}.json").is_file():
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            return {"precision": precision, "target": target, "error": proc.stderr.strip().splitlines()[-1]}
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
        Path(f"{plan}.rss").write_text(str(rss))
    manifest = json.loads(Path(f"{plan}.json").read_text())
    summary = manifest["layer_summary"]
    return {
        "precision": precision,
        "target": target,
        "command": " ".join(cmd[3:]),
        "plan_bytes": manifest["plan"]["bytes"],
        "constant_bytes": summary["constant_bytes"],
        "other_bytes": manifest["plan"]["bytes"] - summary["constant_bytes"],
        "build_time_s": manifest["build_time_s"],
        "peak_rss_mib": round(int(Path(f"{plan}.rss").read_text()) / 1024),
        "low_precision_weights": summary["low_precision_weights"],
        "compute_input_types": summary["compute_input_types"],
        "precision_notes": manifest["precision_notes"],
        "runtime_version": manifest["runtime_version"],
    }


def _ratios(rows: list[dict]) -> None:
    """Each plan's bytes (and constant bytes) over the fp16 plan's for the same target, and the goal."""
    fp16 = {r["target"]: r for r in rows if r["precision"] == "fp16" and "error" not in r}
    for row in rows:
        base = fp16.get(row["target"])
        if base and "error" not in row:
            row["plan_vs_fp16"] = round(row["plan_bytes"] / base["plan_bytes"], 3)
            row["constants_vs_fp16"] = round(row["constant_bytes"] / base["constant_bytes"], 3)
            if row["precision"] in GOALS:
                row["goal"] = GOALS[row["precision"]]
                row["goal_met"] = row["plan_vs_fp16"] <= row["goal"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/full", help="working folder (graphs, data, plans)")
    parser.add_argument("--fp32", default=None, help="the fp32 graph [default: WORK/swin_t.onnx, exported if missing]")
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--holdout-images", type=int, default=8)
    parser.add_argument("-o", "--output", default="benchmarks/results/precision_plans.json")
    args = parser.parse_args()
    work = Path(args.work)
    (work / "plans").mkdir(parents=True, exist_ok=True)
    fp32 = Path(args.fp32) if args.fp32 else work / "swin_t.onnx"
    if not fp32.is_file():
        subprocess.run([sys.executable, "benchmarks/full_size_graph.py", "-o", str(fp32)], check=True)
    calib, holdout = _data(work, args.calib_images, args.holdout_images)
    variants = _variants(fp32, work, calib, holdout, args.holdout_images)
    rows = []
    for precision in PRECISIONS:
        for target in TARGETS:
            rows.append(_build(precision, variants[precision]["onnx"], target, work))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "precision_notes"}), flush=True)
    _ratios(rows)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU, load {load}",
        "graph": str(fp32),
        "calibration": {"images": args.calib_images, "file": str(calib), "method": "max"},
        "holdout": {"images": args.holdout_images, "file": str(holdout)},
        "variants": {p: {**v, "onnx": str(v["onnx"])} for p, v in variants.items()},
        "rows": rows,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
