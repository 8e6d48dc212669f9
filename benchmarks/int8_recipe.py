"""Which int8 choices move the agreement with fp32: method, per-channel weights, what stays in fp32.

Calibrates each method once (range caches in ``--out``, reused on the next run), then builds one int8
graph per recipe from the cached ranges and measures its per-task fidelity against the fp32 graph on
held-out images (the other split of the calibration set's dataset). Prints a table and writes JSON.

Example: python benchmarks/int8_recipe.py --onnx model.fp32.onnx --calib train_64.npz --out runs/recipe
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import onnx
from rich.console import Console
from rich.table import Table

from mtlora_deploy.calib import make_precision_variant, read_precision_metadata

TASKS = ("semseg", "human_parts", "sal", "normals")


def attention_matmuls(path: Path) -> list[str]:
    """MatMuls whose two inputs are both activations (q @ k^T and attn @ v in every window attention)."""
    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]


def recipes(source: Path, methods: list[str]) -> dict[str, dict]:
    """Name -> make_precision_variant options; the first of each method is the default recipe."""
    attention = attention_matmuls(source)
    out = {}
    for method in methods:
        out[f"{method}: default (per-channel, heads fp32)"] = {"calibration_method": method}
    first = methods[0]
    out[f"{first}: heads' last layers quantized too"] = {"calibration_method": first, "exclude_head_layers": False}
    out[f"{first}: per-tensor weights"] = {"calibration_method": first, "per_channel": False}
    out[f"{first}: + attention MatMuls fp32 ({len(attention)})"] = {
        "calibration_method": first,
        "nodes_to_exclude": tuple(attention),
    }
    out[f"{first}: + all Conv fp32 (patch embed, decoders)"] = {
        "calibration_method": first,
        "nodes_to_exclude": ("Conv",),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="The fp32 graph.")
    parser.add_argument("--calib", type=Path, required=True, help="Calibration .npz (train split).")
    parser.add_argument("--out", type=Path, required=True, help="Folder for caches, graphs and the JSON.")
    parser.add_argument("--methods", default="max,entropy", help="Calibration methods, the first is the base.")
    parser.add_argument("--fidelity-images", type=int, default=8, help="Held-out images per variant.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    console, rows = Console(width=160), {}
    for name, options in recipes(args.onnx, args.methods.split(",")).items():
        start = time.perf_counter()
        target = args.out / f"int8_{len(rows)}.onnx"
        cache = args.out / f"ranges-{options['calibration_method']}.json"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make_precision_variant(
                args.onnx,
                "int8",
                target,
                args.calib,
                tool="onnxruntime",
                calibration_cache=cache,
                fidelity_images=args.fidelity_images,
                **options,
            )
        record = read_precision_metadata(target)
        rows[name] = {
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()},
            "fidelity": record["fidelity"],
            "ranges": record["int8_ranges"],
            "seconds": time.perf_counter() - start,
            "file": str(target),
        }
        console.print(f"{name}: {rows[name]['seconds']:.0f} s")
    table = Table(title=f"int8 recipes vs fp32, {args.fidelity_images} held-out images ({args.onnx.name})")
    table.add_column("recipe")
    for task in TASKS:
        table.add_column(task, justify="right")
    for name, row in rows.items():
        cells = row["fidelity"]["tasks"]
        table.add_row(name, *[f"{cells[t]['value']:.2f}{' deg' if t == 'normals' else ' %'}" for t in TASKS])
    console.print(table)
    (args.out / "int8_recipe.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
