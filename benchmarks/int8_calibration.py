"""int8 calibration at scale: peak RSS and time per image against the number of calibration images.

Each calibration set is calibrated in a fresh subprocess (the streaming ranges pass into a new cache,
then the Q/DQ graph from it, no fidelity pass), so its peak resident memory is its own (the child's
``getrusage(RUSAGE_SELF).ru_maxrss``); every 10 images the child prints images seen, time and RSS.
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
from pathlib import Path
warnings.simplefilter("ignore")
from mtlora_deploy.calib import int8, make_precision_variant, read_precision_metadata
from mtlora_deploy.calib.dataset import open_calibration
from mtlora_deploy.calib.ranges import RangeSettings
onnx_path, calib, method, out, cache = sys.argv[1:6]


def rss_mib(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key))
    return int(line.split()[1]) / 1024


class Logged:
    # the calibration images, printing images seen / time / RSS every 10 images (a flat RSS is the bound)
    def __init__(self, images):
        self.images, self.start = images, time.perf_counter()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        if index.start and index.start % 10 == 0:
            print(json.dumps({"seen": index.start, "s": round(time.perf_counter() - self.start, 1),
                              "rss_mib": rss_mib("VmRSS"), "hwm_mib": rss_mib("VmHWM")}), flush=True)
        return self.images[index]


start = time.perf_counter()
images = Logged(open_calibration(calib, "image", 448, min_images=1))
ranges, _ = int8.calibrated_ranges(Path(onnx_path), images, Path(calib), "image", RangeSettings(method=method),
                                   Path(cache), True, False)
built = time.perf_counter()
make_precision_variant(onnx_path, "int8", out, calib, tool="onnxruntime", calibration_method=method,
                       calibration_cache=cache, fidelity_images=0, show_progress=False)
print(json.dumps({"total_s": time.perf_counter() - start, "ranges_s": ranges.seconds, "build_s":
                  time.perf_counter() - built, "images": ranges.images, "tensors": len(ranges.ranges),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_one(onnx_path: Path, calib: Path, method: str, log: Path | None) -> dict:
    """Calibrate ``calib`` in a child process; its result with the child's own peak RSS in MiB."""
    with tempfile.TemporaryDirectory(prefix="int8_bench_") as tmp:
        args = [
            sys.executable,
            "-c",
            CHILD,
            str(onnx_path),
            str(calib),
            method,
            f"{tmp}/int8.onnx",
            f"{tmp}/ranges.json",
        ]
        start, lines = time.perf_counter(), []
        with subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ}
        ) as child:
            for line in child.stdout:
                lines.append(line)
                if log:
                    with log.open("a") as handle:
                        handle.write(line)
            stderr = child.stderr.read()
        wall = time.perf_counter() - start
    if child.returncode:
        raise SystemExit(f"calibration of {calib} failed:\n{stderr[-3000:]}")
    result = json.loads(lines[-1])
    result.update(
        {
            "calib": str(calib),
            "method": method,
            "wall_s": wall,
            "s_per_image": result["ranges_s"] / result["images"],
            "trace": [json.loads(line) for line in lines[:-1] if line.startswith("{")],
        }
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="The fp32 graph.")
    parser.add_argument("--calib", type=Path, nargs="+", required=True, help="Calibration .npz files (any sizes).")
    parser.add_argument("--method", default="entropy", help="entropy, max or percentile.")
    parser.add_argument("--out", type=Path, default=None, help="Append the rows to this JSON file.")
    parser.add_argument("--log", type=Path, default=None, help="Write the per-10-image trace here as it comes.")
    args = parser.parse_args()
    rows = []
    for calib in args.calib:
        row = run_one(args.onnx, calib, args.method, args.log)
        rows.append(row)
        print(
            f"{row['images']:4d} images ({args.method}): peak RSS {row['peak_rss_mib']:.0f} MiB, ranges "
            f"{row['ranges_s']:.0f} s ({row['s_per_image']:.2f} s/image), whole int8 build {row['total_s']:.0f} s",
            flush=True,
        )
    if args.out:
        previous = json.loads(args.out.read_text()) if args.out.is_file() else []
        args.out.write_text(json.dumps(previous + rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
