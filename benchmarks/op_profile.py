"""Where the merged pass' time goes beyond the bare backbone: per-op self CPU time of both, side by side.

One forward of each model (``deployed_graph.build_models``: bare timm Swin-T and the merged 4-task model) per
repetition after a warm-up, profiled with torch.profiler; ops sorted by the merged model's excess. The excess rows
name the work the FLOP counter does not see (copies, elementwise ops over the T task streams).

    PYTHONPATH=. python benchmarks/op_profile.py --size 448 --reps 2
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.deployed_graph import build_models


def op_times(model: torch.nn.Module, images: torch.Tensor, reps: int) -> dict[str, tuple[float, int]]:
    """``{op: (self CPU ms, calls)}`` summed over ``reps`` profiled forwards."""
    totals: dict[str, tuple[float, int]] = {}
    with torch.no_grad():
        model(images)
        for _ in range(reps):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(images)
            for event in prof.key_averages():
                ms, calls = totals.get(event.key, (0.0, 0))
                totals[event.key] = (ms + event.self_cpu_time_total / 1e3, calls + event.count)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = build_models(args.size)
    images = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    bare, merged = op_times(models["bare"], images, args.reps), op_times(models["merged"], images, args.reps)
    total_bare, total_merged = sum(v[0] for v in bare.values()), sum(v[0] for v in merged.values())
    print(f"total ms: bare {total_bare:.0f}, merged {total_merged:.0f} ({total_merged / total_bare:.3f}x)")
    print(f"{'op':44s} {'bare ms':>9s} {'calls':>6s} {'merged ms':>9s} {'calls':>6s} {'excess':>8s}")
    excess = {k: merged.get(k, (0.0, 0))[0] - bare.get(k, (0.0, 0))[0] for k in set(bare) | set(merged)}
    for key in sorted(excess, key=lambda k: -excess[k])[: args.top]:
        (b_ms, b_n), (m_ms, m_n) = bare.get(key, (0.0, 0)), merged.get(key, (0.0, 0))
        print(f"{key:44s} {b_ms:9.1f} {b_n:6d} {m_ms:9.1f} {m_n:6d} {excess[key]:8.1f}")


if __name__ == "__main__":
    main()
