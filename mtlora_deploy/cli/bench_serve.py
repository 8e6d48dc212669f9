"""``mtlora bench-serve``: throughput, latency percentiles, errors and formed batch sizes of a served model."""

from __future__ import annotations

import click


def _counts(value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"got {value!r}, expected client counts such as 1,4,16")
    return counts


@click.command("bench-serve")
@click.option("--server", required=True, help="Triton's HTTP endpoint, e.g. http://127.0.0.1:8000.")
@click.option(
    "--image", required=True, type=click.Path(exists=True, dir_okay=False), help="Image file sent with every request."
)
@click.option(
    "--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for bench_serve.json / .md."
)
@click.option("--concurrency", default="1,4,16", show_default=True, help="Closed-loop client counts.")
@click.option(
    "--duration", type=click.FloatRange(min=0.5), default=5.0, show_default=True, help="Seconds per client count."
)
@click.option("--served-model", default=None, help="Ensemble name [default: the only mtlora ensemble served].")
def bench_serve(server, image, output, concurrency, duration, served_model) -> None:
    """Measure a served mtlora ensemble: throughput (with a 95% interval over rounds), p50/p95/p99 latency and errors
    at each client count, and the batch sizes Triton's dynamic batcher formed (from its statistics). Writes JSON and
    Markdown.

    Example: mtlora bench-serve --server http://127.0.0.1:8000 --image runs/demo/train/data/JPEGImages/synth_000000.jpg -o runs/demo/bench_serve
    """
    from rich.console import Console

    from mtlora_deploy.cli.checks import check_output_dir
    from mtlora_deploy.serve.load import bench_serve as run
    from mtlora_deploy.serve.load import markdown

    check_output_dir(output)
    report = run(server, image, output, _counts(concurrency), duration, served_model)
    Console().print(markdown(report))
