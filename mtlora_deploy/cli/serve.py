"""``mtlora serve``: a model or repository on a real tritonserver until Ctrl-C / SIGTERM."""

from __future__ import annotations

import click


@click.command("serve")
@click.argument("model_or_repo", type=click.Path())
@click.option(
    "--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="KServe v2 HTTP port."
)
@click.option(
    "--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True, help="KServe v2 gRPC port."
)
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True, help="Prometheus metrics port."
)
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--name", default="mtlora", show_default=True, help="Ensemble name when MODEL is exported on the fly.")
@click.option(
    "--triton-env",
    type=click.Path(file_okay=False),
    default=None,
    help="Serving environment with nvidia-pytriton [default: tritonserver on PATH, else <venv>-triton].",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds [default: run until stopped].",
)
def serve(model_or_repo, http_port, grpc_port, metrics_port, address, name, triton_env, duration) -> None:
    """Start tritonserver on MODEL_OR_REPO (a repository from export-triton, or an ONNX graph, plan or run folder
    written into a temporary repository first), wait until ready, print the endpoints, and on Ctrl-C / SIGTERM let the
    requests in flight finish, stop and free the ports. A server without the model step's backend (nvidia-pytriton's
    has the Python backend only) runs the step as a Python-backend ONNX Runtime model; it says so at start.

    Example: mtlora serve runs/demo/onnx/model.fp32.onnx --http-port 8000
    """
    import sys

    from mtlora_deploy.serve.api import serve_model
    from mtlora_deploy.serve.server import Ports

    code = serve_model(model_or_repo, Ports(http_port, grpc_port, metrics_port), address, triton_env, name, duration)
    sys.exit(0 if code == 0 else 1)
