"""``mtlora serve`` end to end: a model file served through a real tritonserver, endpoints printed, and SIGTERM with
requests in flight: they complete, the command exits 0 and no port stays bound."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from mtlora_deploy.serve.client import Input, TritonClient
from mtlora_deploy.serve.server import Ports, port_in_use
from tests.serve.conftest import TASKS, image_bytes, server_or_skip


def test_sigterm_lets_requests_in_flight_finish_then_exits_zero_and_frees_the_ports(tiny_graph, tmp_path):
    server_or_skip()
    ports = Ports.free()
    command = [sys.executable, "-m", "mtlora_deploy", "serve", str(tiny_graph), "--http-port", str(ports.http)]
    command += ["--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not any(line.startswith("serving") for line in lines):
            lines.append(process.stdout.readline())
            assert process.poll() is None, "".join(lines)
        text = "".join(lines)
        assert f"http://127.0.0.1:{ports.http}" in text and "runs as a Python-backend model" in text, text
        url, data = f"http://127.0.0.1:{ports.http}", image_bytes(600, 800)
        answers, failures, finished = [], [], []

        def one_request() -> None:  # a slow request: 8 large images through the post-step
            client = TritonClient(url)
            try:
                answers.append(client.infer("mtlora", [Input("image_bytes", [data] * 8)]))
                finished.append(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - a request lost to the shutdown is the failure looked for
                failures.append(repr(exc))
            finally:
                client.close()

        threads = [threading.Thread(target=one_request) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for thread in threads:
            thread.join(120)
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, text + rest
    assert not failures and len(answers) == 3, failures
    assert max(finished) > signalled  # the signal arrived while requests were in flight
    assert all(
        answer[task].shape[:1] == (8,) and answer[task].shape[-2:] == (600, 800) for answer in answers for task in TASKS
    )
    assert "tritonserver exit code 0" in rest
    assert not any(port_in_use(port) for port in (ports.http, ports.grpc, ports.metrics))
