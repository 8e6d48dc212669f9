"""The TensorRT backend's stream order, checked on the CPU: the engine's stream waits for the caller's stream before
any work is enqueued on it (a new input shape enqueues at once when CUDA graphs are on), and the caller waits for the
engine's stream before it gets the outputs.

No TensorRT and no GPU: the execution context, the streams and the CUDA-graph calls are recorders that log each call
in order; the backend's own ``infer`` / ``_set_shape`` / ``_capture`` / ``_run`` run unchanged.
"""

import contextlib

import pytest
import torch

from mtlora_deploy.engines import tensorrt as trt_backend

ENGINE, CALLER = "engine", "caller"


class Stream:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log, self.cuda_stream = name, log, id(self)

    def wait_stream(self, other: "Stream") -> None:
        self.log.append(f"{self.name} waits for {other.name}")

    def synchronize(self) -> None:
        self.log.append(f"{self.name} synchronize")


class Context:
    """A TensorRT execution context that logs enqueues with the stream they went to."""

    def __init__(self, log: list[str], streams: dict[int, str]) -> None:
        self.log, self.streams, self.shape = log, streams, None

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape = shape
        self.log.append(f"set shape {shape[0]}")
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.shape[0], 2, *self.shape[2:])

    def set_tensor_address(self, name: str, pointer: int) -> None:
        pass

    def execute_async_v3(self, stream: int) -> bool:
        self.log.append(f"enqueue on {self.streams[stream]}")
        return True


class Engine:
    def get_tensor_dtype(self, name: str) -> str:
        return "float32"


class Graph:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def replay(self) -> None:
        self.log.append("replay")


@pytest.fixture
def backend(monkeypatch):
    """A TensorRTBackend whose context, streams and graphs log to ``backend.log`` (in call order)."""
    log: list[str] = []
    engine_stream, caller = Stream(ENGINE, log), Stream(CALLER, log)
    current = [caller]

    @contextlib.contextmanager
    def use_stream(stream):
        current.append(stream)
        try:
            yield
        finally:
            current.pop()

    @contextlib.contextmanager
    def capture(graph, stream=None, capture_error_mode=None):
        log.append(f"capture begin on {stream.name}")
        current.append(stream)
        yield
        current.pop()
        log.append("capture end")

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[-1])
    monkeypatch.setattr(torch.cuda, "stream", use_stream)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: Graph(log))
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: log.append(f"record on {stream.name}"))
    monkeypatch.setattr(trt_backend, "torch_dtype", lambda trt, dtype: torch.float32)

    backend = object.__new__(trt_backend.TensorRTBackend)
    backend.path, backend.device, backend._trt = trt_backend.Path("m.plan"), torch.device("cpu"), None
    backend.metadata = {"manifest": {"batch_profile": {"min": 1, "max": 8}}}
    backend.engine, backend.context = Engine(), Context(log, {engine_stream.cuda_stream: ENGINE})
    backend.stream, backend.input_name, backend.output_names = engine_stream, "image", ["sal"]
    backend._input_dtype, backend._shape, backend._graph, backend._static = torch.float32, None, None, {}
    backend.log = log
    return backend


def _before(log: list[str], first: str, then: str) -> bool:
    return log.index(first) < log.index(then)


@pytest.mark.parametrize("batch", [1, 4])
def test_cuda_graph_new_shape_waits_for_the_caller_before_its_first_enqueue(backend, batch):
    backend.use_cuda_graph = True
    out = backend.infer(torch.ones(batch, 3, 4, 4))
    log = backend.log
    assert log[0] == "engine waits for caller"  # before the shape's plain enqueue and the capture
    assert _before(log, "engine waits for caller", "enqueue on engine")
    assert log.count("enqueue on engine") == 2 and _before(log, "capture begin on engine", "capture end")
    assert _before(log, "capture end", "replay") and log[-1] == "caller waits for engine"
    assert out["sal"].shape == (batch, 2, 4, 4)
    assert torch.equal(backend._static["image"], torch.ones(batch, 3, 4, 4))  # the input reached the static buffer


def test_cuda_graph_same_shape_replays_after_the_wait_and_a_new_shape_captures_again(backend):
    backend.use_cuda_graph = True
    backend.infer(torch.ones(2, 3, 4, 4))
    backend.log.clear()
    backend.infer(torch.full((2, 3, 4, 4), 2.0))
    assert backend.log == ["engine waits for caller", "record on engine", "replay", "caller waits for engine"]
    assert torch.equal(backend._static["image"], torch.full((2, 3, 4, 4), 2.0))
    backend.log.clear()
    backend.infer(torch.ones(3, 3, 4, 4))
    assert backend.log[:2] == ["engine waits for caller", "set shape 3"] and "capture end" in backend.log


def test_without_cuda_graph_the_enqueue_follows_the_wait(backend):
    backend.use_cuda_graph = False
    backend.infer(torch.ones(2, 3, 4, 4))
    log = backend.log
    assert log[0] == "engine waits for caller" and log.count("enqueue on engine") == 1
    assert _before(log, "engine waits for caller", "enqueue on engine") and log[-1] == "caller waits for engine"
    assert "replay" not in log and "capture end" not in log
