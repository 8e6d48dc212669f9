"""int8 calibration at scale: peak RSS and time per image against the number of calibration images.

Each calibration set is calibrated in a fresh subprocess (``make_precision_variant(..., "int8")`` with a
new range cache and no fidelity pass), so its peak resident memory is measured on its own
(the child's ``getrusage(RUSAGE_SELF).ru_maxrss``); the ranges pass and the whole variant build are timed.
Bounded memory means the peak does not grow with the image count; time should grow linearly.

Example: python benchmarks/int8_calibration.py --onnx model.fp32.onnx --calib train_16.npz train_64.npz --out r.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
from mtlora_deploy.calib import make_precision_variant, read_precision_metadata
onnx_path, calib, method, out, cache = sys.argv[1:6]
start = time.perf_counter()
make_precision_variant(onnx_path, "int8", out, calib, tool="onnxruntime", calibration_method=method,
                       calibration_cache=cache, fidelity_images=0, show_progress=False)
record = read_precision_metadata(out)["int8_ranges"]
print(json.dumps({"total_s": time.perf_counter() - start, "ranges_s": record["seconds"],
                  "images": record["images"], "tensors": record["tensors"],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_one(onnx_path: Path, calib: Path, method: str) -> dict:
    """Calibrate ``calib`` in a child process; its result with the child's own peak RSS in MiB."""
    with tempfile.TemporaryDirectory(prefix="int8_bench_") as tmp:
        args = [sys.executable, "-c", CHILD, str(onnx_path), str(calib), method, f"{tmp}/int8.onnx",
                f"{tmp}/ranges.json"]
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, env={**os.environ})
        wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"calibration of {calib} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update({"calib": str(calib), "method": method, "wall_s": wall,
                   "s_per_image": result["ranges_s"] / result["images"]})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="The fp32 graph.")
    parser.add_argument("--calib", type=Path, nargs="+", required=True, help="Calibration .npz files (any sizes).")
    parser.add_argument("--method", default="entropy", help="entropy, max or percentile.")
    parser.add_argument("--out", type=Path, default=None, help="Append the rows to this JSON file.")
    args = parser.parse_args()
    rows = []
    for calib in args.calib:
        row = run_one(args.onnx, calib, args.method)
        rows.append(row)
        print(f"{row['images']:4d} images ({args.method}): peak RSS {row['peak_rss_mib']:.0f} MiB, ranges "
              f"{row['ranges_s']:.0f} s ({row['s_per_image']:.2f} s/image), whole int8 build {row['total_s']:.0f} s",
              flush=True)
    if args.out:
        previous = json.loads(args.out.read_text()) if args.out.is_file() else []
        args.out.write_text(json.dumps(previous + rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
