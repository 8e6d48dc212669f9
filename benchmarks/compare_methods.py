"""The recorded baseline matrix: every preset on the synthetic set with one budget, on the CPU, in ~15 minutes.

Runs ``mtlora compare`` (``run_comparison``) with the small configuration below (tiny Swin at 64x64, random-init
backbone) and copies its table into ``benchmarks/results/compare_methods.{md,json}`` with the exact command and
the wall time. The run folder (``--out``) keeps the checkpoints and ``pareto.png``; rerunning resumes it.

Example: python benchmarks/compare_methods.py --out runs/compare_methods
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path

from mtlora_deploy.compare.api import run_comparison
from mtlora_deploy.compare.report import render_markdown
from mtlora_deploy.compare.settings import DEFAULT_PRESETS
from mtlora_deploy.utils.atomic import write_bytes_atomic, write_json_atomic

MODEL = {"backbone": "swin_test_tiny", "image_size": 64, "decoder_widths": [8, 8, 16, 16], "head_channels": 64}
BUDGET = {"steps": 300, "batch_size": 8, "lr": 0.2, "seed": 0}
MEASURE = {
    "synthetic_images": 192,
    "device": "cpu",
    "threads": 1,
    "latency_batch": 1,
    "latency_iterations": 50,
    "latency_warmup": 10,
}
RESULTS = Path(__file__).parent / "results" / "compare_methods"


def equivalent_command(presets: str, out: Path, budget: dict) -> str:
    """The ``mtlora compare`` line that trains and measures exactly what this script does."""
    words = ["mtlora", "compare", "--presets", presets]
    words += [w for key, value in MODEL.items() for w in ("--set", f"{key}={value}".replace(" ", ""))]
    words += [w for key, value in {**budget, **MEASURE}.items() for w in (f"--{key.replace('_', '-')}", str(value))]
    return shlex.join([*words, "-o", str(out)])


def header(seconds: float) -> str:
    """What the results file says before the table: how it was made and how to read it."""
    return (
        "<!-- written by benchmarks/compare_methods.py; rerun it to refresh -->\n\n"
        f"Recorded with `{shlex.join(['python', *sys.argv])}` in {seconds / 60:.1f} min of wall time on a shared "
        "2-core CPU machine (one torch thread); the equivalent `mtlora compare` command is under the title below.\n\n"
        "**Read with care.** The backbone is random-init (no ImageNet weights are available here) and the data is "
        "the synthetic PASCAL-MT look-alike, so this ranking is not the MTLoRA paper's (which fine-tunes an "
        "ImageNet-pretrained Swin-T on PASCAL-Context); a few hundred CPU steps of a tiny model separate methods "
        "by how fast they fit from scratch. Latency is CPU eager at batch 1 of a tiny model, where per-layer "
        "overheads dominate; the GPU numbers of the full model come from `benchmarks/gpu_profile.py`.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compare_methods"), help="Run folder (resumable).")
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="Comma-separated presets.")
    parser.add_argument("--steps", type=int, default=BUDGET["steps"], help="Optimizer steps per row.")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Stem of the .md/.json results files.")
    args = parser.parse_args()
    budget = {**BUDGET, "steps": args.steps}
    command = equivalent_command(args.presets, args.out, budget)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_comparison(
            args.presets.split(","),
            "synthetic",
            output_dir=args.out,
            model_overrides=MODEL,
            command=command,
            **budget,
            **MEASURE,
        )
    seconds = time.perf_counter() - start
    result["wall_seconds"] = seconds
    markdown = render_markdown(result).replace("![pareto](pareto.png)", f"`{args.out / 'pareto.png'}` (not kept)")
    text = (
        "# Baseline matrix on the CPU (synthetic set)\n\n" + header(seconds) + "\n" + markdown.replace("# ", "## ", 1)
    )
    write_bytes_atomic(args.results.with_suffix(".md"), text.encode())
    write_json_atomic(args.results.with_suffix(".json"), result)
    print(f"wrote {args.results.with_suffix('.md')} and .json ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
