"""The merged single pass against its FLOP floor: latency ratios beside FLOP ratios, in torch eager and ONNX Runtime.

Models (Swin-T, r64, task rank 4, 4 tasks, random LoRA weights with B != 0, fp32, batch 1):
- bare: the timm Swin-T features (no adapters, no task streams, no heads), the floor of any multi-task model;
- merged: ``merge_task_agnostic`` of the 4-task MTLoRA model (task-batched streams and heads);
- single x4: one single-task model per task (Swin-T with its LoRA folded, one head), run one after another.
FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (GMAC = FLOPs / 2). Latencies are medians over
interleaved rounds (every model once per round, the order alternating) so that load from other processes hits all
models alike; the ratios are the numbers to read. Targets (docs/deploy.md, "Targets"): merged/bare latency <= 1.05
x merged/bare FLOPs; single x4 / merged latency >= 2.7. ``--profile`` adds a per-region torch.profiler table of the
merged model.

    PYTHONPATH=. python benchmarks/deployed_graph.py --rounds 5 --json benchmarks/results/deployed_graph.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mtlora_deploy.deploy.merge import merge_task_agnostic
from mtlora_deploy.model import build_model, resolve_config
from mtlora_deploy.profile.variants import BareBackbone

TASKS = ("semseg", "human_parts", "sal", "normals")


def _randomize(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name and "_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return model


def build_models(size: int) -> dict[str, nn.Module]:
    def merged(tasks: tuple[str, ...], preset: str = "mtlora-r64") -> nn.Module:
        overrides = {"image_size": size, "tasks": list(tasks), "task_agnostic_rank": 64}
        config = resolve_config(preset, overrides=overrides)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return merge_task_agnostic(_randomize(build_model(config, warn_without_weights=False)).eval())

    config = resolve_config("mtlora-r64", overrides={"image_size": size, "tasks": list(TASKS)})
    # the paper's single-task baselines: one plain Swin-T (LoRA folded, no task streams) + one head per task
    singles = nn.ModuleList(merged((t,), "lora") for t in TASKS)
    return {
        "bare": BareBackbone(config).eval().requires_grad_(False),
        "merged": merged(TASKS),
        "single x4": SingleTaskModels(singles).eval(),
    }


class SingleTaskModels(nn.Module):
    """One single-task model per task, run one after another: what the single pass replaces."""

    def __init__(self, models: nn.ModuleList) -> None:
        super().__init__()
        self.models = models

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for model in self.models:
            out.update(model(images))
        return out


def gmac(model: nn.Module, images: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(images)
    return counter.get_total_flops() / 2e9


def interleaved(runners: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in runners}
    for index in range(warmup + rounds):
        order = list(runners) if index % 2 == 0 else list(reversed(runners))
        for name in order:
            start = time.perf_counter()
            runners[name]()
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


class BareExportHead(nn.Module):
    """The bare backbone as ``export_graph`` takes it: ``forward(image)`` -> the feature tensor, named by ``tasks``."""

    def __init__(self, bare: BareBackbone) -> None:
        super().__init__()
        self.bare, self.tasks = bare, ("features",)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.bare(image)["features"]


def export_onnx_file(name: str, model: nn.Module, images: torch.Tensor, folder: Path) -> tuple[Path, int]:
    """Export as ``mtlora export`` does (torch.export, batch dynamic, same clean-up); returns the path and node count.

    The example batch is 2 as in ``export_onnx``; the graphs are then run at the benchmark's batch.
    """
    import onnx

    from mtlora_deploy.deploy.export import export_graph, export_onnx

    path = folder / f"{name.replace(' ', '_')}.onnx"
    if isinstance(model, BareBackbone):
        head = BareExportHead(model).eval().requires_grad_(False)
        onnx.save_model(export_graph(head, images.repeat(2, 1, 1, 1), 18, "torch.export"), str(path))
    else:
        export_onnx(model, path, check=False)
    return path, len(onnx.load(str(path)).graph.node)


def ort_runner(path: Path, images: torch.Tensor, threads: int) -> Callable[[], object]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images.numpy()}
    return lambda: session.run(None, feed)


def region_profile(model: nn.Module, images: torch.Tensor) -> list[tuple[str, float]]:
    """Self CPU time (ms) per region of the merged model, from torch.profiler with record_function regions."""
    from torch.profiler import ProfilerActivity, profile, record_function

    backbone = model.backbone
    regions: list[tuple[str, nn.Module]] = [("patch embedding", backbone.patch_embed)]
    for stage in backbone.layers:
        blocks = list(stage.blocks)
        regions += [("shared blocks", b) for b in blocks[:-1]]
        if isinstance(stage.downsample, nn.Module) and not isinstance(stage.downsample, nn.Identity):
            regions.append(("patch merging (shared + T task streams)", stage.downsample))
    regions.append(("decoders incl. final upsampling", model.decoders))
    handles, active = [], {}
    for label, module in regions:

        def pre(mod, args, label=label):
            active[id(mod)] = record_function(label)
            active[id(mod)].__enter__()

        def post(mod, args, out):
            active.pop(id(mod)).__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.no_grad():
            model(images)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(images)
    finally:
        for handle in handles:
            handle.remove()
    totals = {label: 0.0 for label, _ in regions}
    upsample_ms = 0.0
    for event in prof.key_averages():
        if event.key in totals:
            totals[event.key] += event.cpu_time_total / 1e3
        if event.key == "aten::upsample_bilinear2d":
            upsample_ms += event.cpu_time_total / 1e3
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3
    # stage-final blocks run through multistream_block_forward (not block.forward), so no hook sees them: they are
    # the remainder
    totals["stage-final blocks (shared + T task streams) = remainder"] = total - sum(totals.values())
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    return rows + [("bilinear upsampling (all, in decoders)", upsample_ms), ("total (all ops)", total)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(1, 3, args.size, args.size)
    models = build_models(args.size)
    result: dict[str, object] = {"settings": vars(args) | {"torch": torch.__version__, "batch": 1}}
    flops = {k: gmac(m, images) for k, m in models.items()}
    result["gmac"] = flops
    print("GMAC/image:", {k: round(v, 2) for k, v in flops.items()}, flush=True)
    if args.profile:
        result["regions_ms"] = region_profile(models["merged"], images)
        for label, ms in result["regions_ms"]:
            print(f"  {label:40s} {ms:9.1f} ms")
    runners = {k: (lambda m=m: m(images)) for k, m in models.items()}
    with torch.no_grad():
        result["eager_s"] = interleaved(runners, args.rounds)
    result["eager"] = _ratios(result["eager_s"], flops)
    print("eager:", json.dumps(result["eager"]), flush=True)
    if not args.no_onnx:
        with tempfile.TemporaryDirectory() as tmp:
            exported = {k: export_onnx_file(k, m, images, Path(tmp)) for k, m in models.items() if k != "single x4"}
            result["onnx_nodes"] = {k: n for k, (_, n) in exported.items()}
            print("ONNX nodes:", result["onnx_nodes"], flush=True)
            ort_runners = {k: ort_runner(p, images, args.threads) for k, (p, _) in exported.items()}
            result["ort_s"] = interleaved(ort_runners, args.rounds)
            result["ort"] = _ratios(result["ort_s"], flops)
            print("onnxruntime:", json.dumps(result["ort"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


def _ratios(times: dict[str, list[float]], flops: dict[str, float]) -> dict[str, float]:
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {f"median_ms {k}": 1e3 * v for k, v in med.items()}
    out["merged/bare latency"] = med["merged"] / med["bare"]
    out["merged/bare FLOPs"] = flops["merged"] / flops["bare"]
    out["latency ratio / FLOP ratio (target <= 1.05)"] = out["merged/bare latency"] / out["merged/bare FLOPs"]
    if "single x4" in med:
        out["single x4 / merged latency (target >= 2.7)"] = med["single x4"] / med["merged"]
        out["single x4 / merged FLOPs"] = flops["single x4"] / flops["merged"]
    return out


if __name__ == "__main__":
    main()
