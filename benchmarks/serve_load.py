"""Served load against the same backend in-process, on one machine, side by side.

For a graph: ``export-triton`` -> a real tritonserver (this machine: nvidia-pytriton's, model step = ONNX Runtime
in a Python-backend model) -> 16 closed-loop clients sending a JPEG through the ensemble (decode, resize, model,
maps at the JPEG's size; by default the JPEG is at the model's input size, so resizing costs nothing and what is
compared is serving itself; ``--photo 640x480`` adds the resizing of real photos) -> the batch sizes Triton formed
(its statistics). In-process: the same steps in this process, one after another (``utils.imaging`` pre/post-step,
an ONNX Runtime session with its default threads) at that batch size.
Served and in-process rounds are interleaved (A B A B ..., 5 each) so load drifting on this shared machine hits
both; the ratio's interval pairs them. Then a steady open-loop rate at half the served saturation: p50/p95/p99.
Targets (issue 21): served >= 0.9x in-process throughput; p99 <= 2x p50 below saturation. GMAC per image beside
(the FLOP floor: achieved GFLOP/s).

    python benchmarks/serve_load.py --tiny --label "demo model (tiny Swin 64)" -o benchmarks/results/serve_load.json
    python benchmarks/serve_load.py --tiny --photo 640x480 --label "demo model, 640 x 480 photos" -o ...
    python benchmarks/full_size_graph.py -o /tmp/full/swin_t.onnx
    python benchmarks/serve_load.py --graph /tmp/full/swin_t.onnx --label "Swin-T 448 mtlora-r64 4 tasks" \\
        --gmac 26.88 --duration 30 --steady-requests 40 -o benchmarks/results/serve_load.json
    (26.88 GMAC: the merged single pass in benchmarks/results/flop_floors.json)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtlora_deploy.profile.flops import onnx_gmac  # noqa: E402
from mtlora_deploy.profile.stats import ratio_estimate  # noqa: E402
from mtlora_deploy.report.predict import map_kind  # noqa: E402
from mtlora_deploy.serve.load import batch_executions, closed_loop, mean_batch, open_loop, summarize  # noqa: E402
from mtlora_deploy.serve.repository import export_triton  # noqa: E402
from mtlora_deploy.serve.server import Ports, TritonServer  # noqa: E402
from mtlora_deploy.utils import imaging  # noqa: E402
from mtlora_deploy.utils.onnx_info import read_onnx_metadata  # noqa: E402

ROUNDS = 5


def photo(height: int, width: int) -> bytes:
    """A smooth JPEG of height x width."""
    small = np.random.default_rng(0).integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class InProcess:
    """The ensemble's work in this process: decode + pre-step per image, one ORT run per batch, post-step per image
    (``utils.imaging``, the file the served steps run; ONNX Runtime with its default threads, as in the server)."""

    def __init__(self, graph: Path, data: bytes) -> None:
        import onnxruntime as ort

        self.meta, self.data = read_onnx_metadata(graph), data
        self.session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        self.kinds = {t: map_kind(t) for t in self.meta["tasks"]}

    def batch(self, size: int) -> None:
        meta = self.meta
        rgbs = [imaging.decode_image(self.data) for _ in range(size)]
        inputs = np.stack([imaging.preprocess(r, meta["image_size"], meta["mean"], meta["std"]) for r in rgbs])
        outputs = dict(zip(self.names, self.session.run(self.names, {"image": inputs}), strict=True))
        for i, rgb in enumerate(rgbs):
            for task, kind in self.kinds.items():
                imaging.task_map(outputs[task][i], kind, meta["outputs"], *rgb.shape[:2])

    def throughput(self, size: int, duration: float) -> float:
        """Images per second over whole batches run for about ``duration`` seconds."""
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            self.batch(size)
            count += size
        return count / (time.perf_counter() - start)


def measure(
    graph: Path,
    label: str,
    duration: float,
    clients: int,
    steady: tuple[int, float],
    gmac: float | None,
    size: tuple | None,
) -> dict:
    """Served rounds and in-process rounds interleaved (A B A B ...), so machine load that drifts hits both sides;
    then ``steady = (requests, fraction)``: that many requests at that fraction of the served saturation rate."""
    steady_requests, steady_fraction = steady
    from mtlora_deploy.serve.client import TritonClient
    from mtlora_deploy.serve.load import Sample

    side = read_onnx_metadata(graph)["image_size"]
    height, width = size or (side, side)
    data, load_before = photo(height, width), os.getloadavg()
    gmac = gmac or onnx_gmac(graph)[0]
    local = InProcess(graph, data)
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        repository = export_triton(graph, Path(tmp) / "repo").path
        with TritonServer(repository, Path(tmp) / "run", Ports.free(), ready_timeout=600) as server:
            closed_loop(server.url, "mtlora", data, 2, min(5.0, duration))  # warm every step
            client = TritonClient(server.url)
            before = client.statistics("mtlora_model")
            pooled, served_rounds, local_rounds, batch = Sample(), [], [], None
            for _ in range(ROUNDS):
                started = time.perf_counter()
                sample = closed_loop(server.url, "mtlora", data, clients, duration)
                # every request answered, over the time until the last answer (requests in flight at the deadline
                # finish after it: dividing by the nominal duration would overstate long-latency models)
                served_rounds.append(len(sample.latencies) / (time.perf_counter() - started))
                pooled.latencies += sample.latencies
                pooled.errors += sample.errors
                if batch is None:  # the batch size Triton forms under this load, from the first round
                    batch = max(1, round(mean_batch(batch_executions(before, client.statistics("mtlora_model"))) or 1))
                    local.batch(batch)  # warm
                local_rounds.append(local.throughput(batch, duration))
            executions = batch_executions(before, client.statistics("mtlora_model"))
            rate = steady_fraction * float(np.median(served_rounds))
            steady_s = steady_requests / rate
            steady_sample = open_loop(server.url, "mtlora", data, rate, steady_s)
            steady = summarize(steady_sample, ROUNDS)
            done = np.asarray(steady_sample.started) + np.asarray(steady_sample.latencies)
            achieved = float((len(done) - 1) / (done.max() - done.min())) if len(done) > 1 else 0.0
            client.close()
            notes = server.notes
    latencies = np.asarray(pooled.latencies) * 1e3
    ratio = ratio_estimate(served_rounds, local_rounds)
    p = steady["latency_ms"]
    served_median, local_median = float(np.median(served_rounds)), float(np.median(local_rounds))
    return {
        "label": label,
        "graph": str(graph),
        "gmac_per_image": gmac,
        "image": f"{width} x {height} JPEG, maps returned at {width} x {height}",
        "rounds": ROUNDS,
        "round_s": duration,
        "served_saturation": {
            "clients": clients,
            "throughput_per_s": served_median,
            "throughput_rounds": served_rounds,
            "requests": len(pooled.latencies),
            "errors": len(pooled.errors),
            "latency_ms": {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 95, 99)},
            "batch_executions": executions,
            "mean_batch": mean_batch(executions),
        },
        "in_process_same_batch": {"batch": batch, "throughput_per_s": local_median, "throughput_rounds": local_rounds},
        "served_over_in_process": ratio,
        "steady_below_saturation": {
            "rate_per_s": rate,
            "fraction_of_saturation": steady_fraction,
            "achieved_per_s": achieved,
            "held_the_rate": bool(achieved >= 0.95 * rate),  # else the queue grew: the load was not below saturation
            **steady,
            "p99_over_p50": p["p99"] / p["p50"] if p["p50"] else None,
        },
        "achieved_gflops": {
            "served": 2 * gmac * served_median if gmac else None,
            "in_process": 2 * gmac * local_median if gmac else None,
        },
        "targets": {
            "served_over_in_process_ge_0.9": ratio["value"] >= 0.9,
            "p99_le_2x_p50": bool(p["p50"] and p["p99"] <= 2 * p["p50"]) if achieved >= 0.95 * rate else None,
        },
        "notes": notes,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before[0],
            "load_average_after": os.getloadavg()[0],
        },
    }


def tiny_graph(path: Path) -> tuple[Path, float]:
    """The demo's model (tiny Swin at 64 x 64, four tasks) with random LoRA B, merged and exported; and its GMAC
    per image (counted on the torch model, as ``mtlora profile`` counts)."""
    import warnings

    import torch

    from mtlora_deploy.demo import DEMO_MODEL
    from mtlora_deploy.deploy.export import export_onnx
    from mtlora_deploy.deploy.merge import merge_task_agnostic
    from mtlora_deploy.model import build_model, resolve_config

    torch.manual_seed(0)
    model = build_model(resolve_config("mtlora-r16", overrides=dict(DEMO_MODEL)), warn_without_weights=False).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora" in name and "_B" in name:
                param.normal_(0, 0.02)
    from mtlora_deploy.profile.flops import torch_gmac

    merged = merge_task_agnostic(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(merged, path, legacy=True, check=False)
        return path, torch_gmac(merged, DEMO_MODEL["image_size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, help="an ONNX graph from mtlora export")
    parser.add_argument("--tiny", action="store_true", help="export the demo's model (random weights) and use it")
    parser.add_argument("--label", required=True)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of each round (and of the steady phase)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--steady-requests", type=int, default=120, help="requests of the steady phase")
    parser.add_argument("--steady-fraction", type=float, default=0.5, help="steady rate / served saturation rate")
    parser.add_argument("--gmac", type=float, default=None, help="GMAC per image (default: counted from the graph)")
    parser.add_argument("--photo", default=None, help="WIDTHxHEIGHT of the JPEG sent [default: the model's size]")
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSON file; results are merged by label")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve_load_graph_") as tmp:
        graph, gmac = tiny_graph(Path(tmp) / "tiny.onnx") if args.tiny else (args.graph, args.gmac)
        size = tuple(int(v) for v in reversed(args.photo.split("x"))) if args.photo else None
        steady = (args.steady_requests, args.steady_fraction)
        result = measure(graph, args.label, args.duration, args.clients, steady, gmac, size)
        result = {"command": shlex.join(["python", *sys.argv]), **result}
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results[args.label] = result
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    s, local, r = result["served_saturation"], result["in_process_same_batch"], result["served_over_in_process"]
    steady = result["steady_below_saturation"]["latency_ms"]
    print(
        f"{args.label}: served {s['throughput_per_s']:.2f}/s at {s['clients']} clients (mean batch {s['mean_batch']}), "
        f"in-process {local['throughput_per_s']:.2f}/s at batch {local['batch']}: ratio {r['value']:.2f} "
        f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]; steady p50 {steady['p50']:.1f} ms p95 {steady['p95']:.1f} ms "
        f"p99 {steady['p99']:.1f} ms; load {result['machine']}"
    )


if __name__ == "__main__":
    main()
