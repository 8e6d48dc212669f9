"""The warnings and log records that are known noise to a user, each named by message and category, in one place.

Nothing here is blanket: a warning or log record that no entry names (ours or a library's) still reaches the user.
:func:`quiet_known_noise` applies the filters for the duration of a ``with`` block and restores the warning
filters and loggers afterwards, so importing or calling the library never changes a caller's own settings.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class WarningNoise:
    """A warning to ignore: ``message`` is a regex matched at the start of the text (as ``warnings`` does)."""

    message: str
    category: type[Warning]
    why: str


@dataclass(frozen=True)
class LogNoise:
    """A log record to drop: records of ``logger`` whose message matches ``message`` (regex, from the start)."""

    logger: str
    message: str
    why: str


# Ours, expected where a run deliberately trains from random init (the demo, compare rows without weights): the
# caller decided, the user gets nothing to act on. Only quiet where passed to quiet_known_noise explicitly.
NO_PRETRAINED_WEIGHTS = WarningNoise(
    r".*: built without pretrained weights \(random init\)",
    UserWarning,
    "the model is built without ImageNet weights on purpose here",
)

# Third-party warnings of `mtlora export --legacy-exporter` (seen with torch 2.14 / timm 1.0); all else stays visible.
EXPORT_WARNINGS = (
    WarningNoise(
        r"You are using the legacy TorchScript-based ONNX export",
        DeprecationWarning,
        "the TorchScript exporter is the user's choice (export_onnx(legacy=True)); torch.export is the default",
    ),
    WarningNoise(
        r"The feature will be removed\. Please remove usage of this function",
        DeprecationWarning,
        "raised inside torch's own TorchScript exporter, not by a call of ours",
    ),
    WarningNoise(
        r"Converting a tensor to a Python (boolean|number) might cause the trace to be incorrect",
        Warning,  # torch.jit.TracerWarning (not imported: this module stays free of torch)
        "timm's PatchEmbed asserts (and formats) the input size; at the traced static size it is a constant, and the "
        "exported graph is checked against PyTorch afterwards",
    ),
)

# ONNX Runtime's quantize_static logs this twice per call on the root logger (``logging.warning``). Our graphs come from
# our own exporter with shapes inferred; the pre-processing it suggests (onnxruntime.quantization.shape_inference)
# is not what a user of `mtlora export --precision int8` can act on.
ORT_QUANTIZER_LOGS = (
    LogNoise("root", r"Please consider (to run )?pre-processing before quantization", "not actionable for a user"),
    LogNoise(
        "root",
        r"Bias of Gemm node '.*' is not constant",
        "the merged model's Gemm biases are computed in the graph; biases stay float (QuantizeBias off) either way",
    ),
)

KNOWN_WARNINGS: tuple[WarningNoise, ...] = EXPORT_WARNINGS
KNOWN_LOGS: tuple[LogNoise, ...] = ORT_QUANTIZER_LOGS


class LogNoiseFilter(logging.Filter):
    """Drops the records one ``logging.Logger`` emits that match one of ``entries``."""

    def __init__(self, entries: tuple[LogNoise, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(entry.message) for entry in entries]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in self.patterns)


@contextlib.contextmanager
def quiet_known_noise(*extra: WarningNoise) -> Iterator[None]:
    """Ignore the known third-party warnings (plus ``extra``) and drop the known log records inside the block.

    Root-logger records are filtered on the root logger itself, so only the named messages go; a library that logs
    through ``logging.warning`` on an unconfigured root meets a temporary stderr handler instead of configuring the
    root logger for the rest of the process.
    """
    with warnings.catch_warnings(), _filtered_loggers(KNOWN_LOGS):
        for entry in (*KNOWN_WARNINGS, *extra):
            warnings.filterwarnings("ignore", message=entry.message, category=entry.category)
        yield


@contextlib.contextmanager
def _filtered_loggers(entries: tuple[LogNoise, ...]) -> Iterator[None]:
    by_logger: dict[str, list[LogNoise]] = {}
    for entry in entries:
        by_logger.setdefault(entry.logger, []).append(entry)
    added: list[tuple[logging.Logger, logging.Filter]] = []
    root = logging.getLogger()
    stand_in = logging.lastResort if not root.handlers and logging.lastResort is not None else None
    if stand_in is not None:
        root.addHandler(stand_in)  # what an unconfigured root does anyway, minus logging.basicConfig's lasting change
    try:
        for name, group in by_logger.items():
            logger = root if name == "root" else logging.getLogger(name)
            added.append((logger, LogNoiseFilter(tuple(group))))
            logger.addFilter(added[-1][1])
        yield
    finally:
        for logger, log_filter in added:
            logger.removeFilter(log_filter)
        if stand_in is not None:
            root.removeHandler(stand_in)
