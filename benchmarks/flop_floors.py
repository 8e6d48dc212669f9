"""GMAC per image of the exact model's variants (Swin-T 448, 4 tasks, MTLoRA r=64), counted the way
``mtlora profile`` counts them (torch FlopCounterMode, attention through the math kernel), against
docs/deploy.md, "Targets".

    python benchmarks/flop_floors.py [--out benchmarks/results/flop_floors.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtlora_deploy.model import DEFAULT_TASKS, build_model, resolve_config  # noqa: E402
from mtlora_deploy.profile.flops import torch_gmac  # noqa: E402
from mtlora_deploy.profile.variants import bare_backbone, merged_model, sub_model  # noqa: E402

SPEC = json.loads((Path(__file__).parent / "reference" / "deploy_h100.json").read_text())["flop_floors_gmac_per_image"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="JSON file for the counts")
    args = parser.parse_args(argv)
    config = resolve_config("mtlora-r64", overrides={"image_size": 448, "tasks": list(DEFAULT_TASKS)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(config, warn_without_weights=False).eval()
    merged = merged_model(model)
    counts = {
        "bare Swin-T": torch_gmac(bare_backbone(model), 448),
        "merged single pass": torch_gmac(merged, 448),
        "unmerged": torch_gmac(model, 448),
        "four single-task models": sum(torch_gmac(merged_model(sub_model(model, (t,))), 448) for t in model.tasks),
        "four single-task models, unmerged": sum(torch_gmac(sub_model(model, (t,)), 448) for t in model.tasks),
    }
    for name, gmac in counts.items():
        print(f"{name:36s} {gmac:8.2f} GMAC/image   docs/deploy.md: {SPEC.get(name, 'n/a')}")
    print(
        f"merged / bare: {counts['merged single pass'] / counts['bare Swin-T']:.3f}x; four single-task models / "
        f"merged: {counts['four single-task models'] / counts['merged single pass']:.3f}x"
    )
    if args.out:
        Path(args.out).write_text(json.dumps({"gmac_per_image": counts, "deploy_md": SPEC}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
