"""Peak memory around a measurement: the torch CUDA allocator's peak on a GPU, the RSS high-water delta on a CPU."""

from __future__ import annotations

import resource
import sys
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from typing_extensions import Self

CUDA_METHOD = "torch.cuda.max_memory_allocated (torch allocator; ONNX Runtime/TensorRT memory outside it is not seen)"
CPU_METHOD = "peak RSS delta (ru_maxrss after - before; 0 when the process had already peaked higher)"


def memory_method(device: torch.device) -> str:
    """How peak memory is measured on ``device`` (printed with the numbers)."""
    return CUDA_METHOD if device.type == "cuda" else CPU_METHOD


def _max_rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakMemory:
    """Context manager: ``peak_bytes`` is set on exit (CUDA: absolute peak during the block, weights included)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_bytes = device, None

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._start = _max_rss_bytes()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self.peak_bytes = max(0, _max_rss_bytes() - self._start)
