"""Peak memory of each candidate.

CUDA: the torch allocator's peak during the candidate's timed calls above what was allocated when they started,
plus the candidate's own weights (other candidates of its group are resident at the same time and are not its
cost). CPU: a process's peak RSS only ever grows, so within one process every candidate after the first reads 0;
with ``memory=True`` each candidate is opened and run again in a fresh subprocess and its peak RSS above that
process's baseline (interpreter, torch and the toolkit imported; on Linux the high-water mark is reset there
through /proc/self/clear_refs) is reported. Without it the CPU column is absent.
"""

from __future__ import annotations

import pickle
import resource
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from typing_extensions import Self

CUDA_METHOD = (
    "torch.cuda.max_memory_allocated during the timed calls above the allocation at their start, plus "
    "the candidate's weights (ONNX Runtime/TensorRT memory outside the torch allocator is not seen; a CUDA-graph "
    "pool captured during warm-up, as torch-compiled reduce-overhead makes, is already allocated at the start and "
    "is not counted)"
)
CPU_METHOD = (
    "peak RSS of a fresh subprocess that opens the candidate and runs each batch size, above its "
    "baseline after importing torch and the toolkit"
)
CPU_OFF = "not measured on the CPU (on request it is, in one fresh subprocess per candidate)"


SHORT_METHODS = {CUDA_METHOD: "torch allocator peak + weights", CPU_METHOD: "peak RSS in a subprocess"}
SHORT_METHODS[CPU_OFF] = "not measured on the CPU"
"""Each method in a few words, for the console."""


def memory_method(device: torch.device, cpu_subprocess: bool = False) -> str:
    """How peak memory is measured on ``device`` (printed with the numbers)."""
    if device.type == "cuda":
        return CUDA_METHOD
    return CPU_METHOD if cpu_subprocess else CPU_OFF


def max_rss_bytes() -> int:
    """This process's peak resident set size so far."""
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakMemory:
    """Context manager: on CUDA ``peak_bytes`` is the allocator's peak during the block above its start; on the CPU
    None (see ``measure_cpu_peaks``)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_bytes = device, None

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device)) - self._start


def weight_bytes(predictor: Any) -> int:
    """Bytes of the torch parameters and buffers a predictor holds (0 for ONNX Runtime / TensorRT)."""
    parts = getattr(predictor, "predictors", None)
    if parts is not None:
        return sum(weight_bytes(p) for p in parts)
    model = getattr(predictor, "model", None)
    if not isinstance(model, torch.nn.Module):
        return 0
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def reset_peak_rss() -> bool:
    """Linux: reset this process's RSS high-water mark (VmHWM) to its current RSS; False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(resettable: bool) -> int:
    """This process's RSS high-water mark: VmHWM when ``reset_peak_rss`` worked, else the lifetime peak."""
    if resettable:
        with open("/proc/self/status") as handle:
            line = next(row for row in handle if row.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    return max_rss_bytes()


def _child(payload: bytes, batches: Sequence[int], include_copies: bool, connection) -> None:
    """In a fresh process: baseline RSS, then open the candidate and run each batch size (ascending)."""
    import mtlora_deploy.model  # noqa: F401  (imports are baseline, not the candidate's cost)

    try:
        resettable = reset_peak_rss()  # else the imports' own transient peak would hide a small model
        base = peak_rss_bytes(resettable)
        predictor = pickle.loads(payload)()
        peaks = {}
        for batch in sorted(batches):
            images = torch.randn(batch, 3, predictor.image_size, predictor.image_size)
            for _ in range(2):
                predictor.infer(images)
            peaks[batch] = peak_rss_bytes(resettable) - base
        predictor.close()
        connection.send(("ok", peaks))
    except Exception as exc:  # noqa: BLE001  (sent back to the parent, which notes it)
        connection.send(("error", f"{type(exc).__name__}: {exc}"))


def measure_cpu_peaks(
    candidates: Sequence[Any], batches: Sequence[int], settings: Any, notes: list[str], until: float | None = None
) -> dict[tuple[int, int], int]:
    """``{(id(candidate), batch): peak RSS bytes}``, one fresh (spawned) subprocess per candidate; none starts at
    or after ``until`` (on ``settings.clock``: the time budget)."""
    import multiprocessing

    context, out = multiprocessing.get_context("spawn"), {}
    for candidate in candidates:
        if until is not None and settings.clock() >= until:
            notes.append(f"{candidate.label}: no peak RSS (the budget is spent)")
            continue
        try:
            payload = pickle.dumps(candidate.portable())
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{candidate.label}: no peak RSS (cannot send it to a subprocess: {type(exc).__name__})")
            continue
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(payload, list(batches), settings.include_copies, send))
        process.start()
        status, result = receive.recv() if receive.poll(600) else ("error", "no answer within 600 s")
        process.join(30)
        if status == "ok":
            out.update({(id(candidate), batch): peak for batch, peak in result.items()})
        else:
            notes.append(f"{candidate.label}: no peak RSS ({result})")
    return out
