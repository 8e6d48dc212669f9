"""A real tritonserver on the tiny graph's repository: served maps equal local predict bit for bit, the model step
equals ONNX Runtime in-process, dynamic batching forms batches under 16 clients, bad requests get clear errors while
everyone else is served, and a client killed mid-request disturbs nobody. One server for the module."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mtlora_deploy.serve.client import InferenceError, Input, TritonClient
from tests.conftest import run_ort
from tests.serve.conftest import TASKS, image_bytes


def _local_maps(graph, path):
    from mtlora_deploy.engines.registry import open_backend
    from mtlora_deploy.report.predict import graph_conventions, predict_maps, read_rgb

    with open_backend(graph) as runner:
        return predict_maps(runner, read_rgb(path), graph_conventions(runner.metadata))


@pytest.mark.parametrize("height, width, fmt", [(48, 80, "JPEG"), (97, 61, "PNG")])
def test_ensemble_answers_an_image_with_the_maps_of_local_predict(served, tiny_graph, tmp_path, height, width, fmt):
    path = tmp_path / f"photo.{fmt.lower()}"
    path.write_bytes(image_bytes(height, width, fmt))
    client = TritonClient(served.url)
    served_maps = client.infer("mtlora", [Input("image_bytes", [path.read_bytes()])])
    from_array = client.infer("mtlora_rgb", [Input("image_rgb", np.asarray(Image.open(path).convert("RGB"))[None])])
    client.close()
    local = _local_maps(tiny_graph, path)
    assert set(served_maps) == set(TASKS)
    for task in TASKS:
        assert served_maps[task].shape[-2:] == (height, width)
        np.testing.assert_array_equal(served_maps[task][0], local[task])  # bit-equal: same code, fp32 graph
        np.testing.assert_array_equal(from_array[task], served_maps[task])
    assert local["semseg"].dtype == np.uint8 and len(np.unique(local["semseg"])) > 1  # maps that say something


def test_predict_with_server_writes_the_same_pictures_as_local_predict(served, tiny_graph, tmp_path):
    from mtlora_deploy.cli.main import cli

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(image_bytes(40, 72))
    (tmp_path / "in" / "b.png").write_bytes(image_bytes(64, 50, "PNG", seed=1))
    runner = CliRunner()
    local = runner.invoke(cli, ["predict", str(tmp_path / "in"), "-m", str(tiny_graph), "-o", str(tmp_path / "local")])
    remote = runner.invoke(cli, ["predict", str(tmp_path / "in"), "--server", served.url, "-o", str(tmp_path / "srv")])
    assert local.exit_code == 0 and remote.exit_code == 0, (local.output, remote.output)
    files = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert len(files) == 2 * (len(TASKS) + 1) and files == sorted(p.name for p in (tmp_path / "srv").iterdir())
    for name in files:
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "srv" / name).read_bytes(), name


def test_model_step_equals_onnx_runtime_in_process(served, tiny_graph):
    images = np.random.default_rng(3).standard_normal((3, 3, 64, 64)).astype(np.float32)
    client = TritonClient(served.url)
    outputs = client.infer("mtlora_model", [Input("image", images)])
    client.close()
    expected = run_ort(tiny_graph, images)
    for task in TASKS:
        np.testing.assert_allclose(outputs[task], expected[task], rtol=1e-5, atol=1e-5)


def _clients(url: str, data: bytes, count: int, seconds: float, failures: list, done: list) -> list[threading.Thread]:
    def run() -> None:
        client, deadline = TritonClient(url), time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                out = client.infer("mtlora", [Input("image_bytes", [data])])
                done.append(out["semseg"].shape)
            except Exception as exc:  # noqa: BLE001 - any failure of a good request is what this test looks for
                failures.append(repr(exc))
        client.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_sixteen_clients_get_batches_larger_than_one(served):
    from mtlora_deploy.serve.load import batch_executions

    client = TritonClient(served.url)
    before = client.statistics("mtlora_model")
    failures, done = [], []
    for thread in _clients(served.url, image_bytes(64, 64), 16, 4.0, failures, done):
        thread.join()
    executions = batch_executions(before, client.statistics("mtlora_model"))
    client.close()
    assert not failures and len(done) >= 16
    assert max(executions) > 1, executions
    assert sum(size * n for size, n in executions.items()) == len(done)  # every request ran exactly once


BAD_REQUESTS = [
    ("wrong dtype", "mtlora_rgb", [Input("image_rgb", np.zeros((1, 8, 8, 3), np.float32))], "expects 'UINT8'"),
    ("wrong shape", "mtlora_rgb", [Input("image_rgb", np.zeros((1, 8, 8), np.uint8))], "shape"),
    ("missing input", "mtlora", [], "expected 1 inputs but got 0"),
    (
        "unexpected input",
        "mtlora",
        [Input("image_rgb", np.zeros((1, 8, 8, 3), np.uint8))],
        "unexpected inference input",
    ),
    ("batch over the maximum", "mtlora", [Input("image_bytes", [image_bytes(8, 8)] * 9)], "batch-size must be <= 8"),
    ("bytes that are not an image", "mtlora", [Input("image_bytes", [b"not an image"])], "not a readable image"),
]


def test_malformed_requests_get_clear_errors_while_others_are_served(served):
    failures, done = [], []
    threads = _clients(served.url, image_bytes(32, 48), 4, 3.0, failures, done)
    client, answers = TritonClient(served.url), {}
    for label, model, inputs, _ in BAD_REQUESTS:
        with pytest.raises(InferenceError) as error:
            client.infer(model, inputs)
        answers[label] = (error.value.status, error.value.message)
    client.close()
    for thread in threads:
        thread.join()
    for label, _, _, expected in BAD_REQUESTS:
        status, message = answers[label]
        assert 400 <= status < 600 and expected in message, (label, answers[label])
    assert not failures and len(done) > 4, failures
    assert served.process.poll() is None


KILLED_CLIENT = """
import sys
from mtlora_deploy.serve.client import Input, TritonClient
data = open(sys.argv[2], "rb").read()
client = TritonClient(sys.argv[1])
print("sending", flush=True)
while True:
    client.infer("mtlora", [Input("image_bytes", [data] * 8)])
"""


def test_a_client_killed_mid_request_disturbs_nobody(served, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(image_bytes(600, 800))  # the post-step takes a while: the kill lands mid-request
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, served.url, str(big)], stdout=subprocess.PIPE, text=True
    )
    assert killed.stdout.readline().strip() == "sending"
    failures, done = [], []
    threads = _clients(served.url, image_bytes(32, 48), 4, 3.0, failures, done)
    time.sleep(1.0)
    killed.kill()
    killed.wait()
    for thread in threads:
        thread.join()
    assert not failures and done, failures
    client = TritonClient(served.url)
    assert client.ready("mtlora") and client.infer("mtlora", [Input("image_bytes", [image_bytes(20, 30)])])
    client.close()


def test_bench_serve_reports_throughput_percentiles_and_batches(served, tmp_path):
    import json

    from mtlora_deploy.cli.main import cli

    (tmp_path / "photo.jpg").write_bytes(image_bytes(48, 64))
    args = ["bench-serve", "--server", served.url, "--image", str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "b")]
    result = CliRunner().invoke(cli, [*args, "--concurrency", "1,4", "--duration", "1.5"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b" / "bench_serve.json").read_text())
    assert [row["clients"] for row in report["results"]] == [1, 4]
    for row in report["results"]:
        assert row["errors"] == 0 and row["requests"] > 0
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p95"] <= row["latency_ms"]["p99"]
        assert sum(int(size) * n for size, n in row["batch_executions"].items()) >= row["requests"]
    assert "| 4 |" in (tmp_path / "b" / "bench_serve.md").read_text()
