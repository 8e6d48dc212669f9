"""The two TensorRT flavours, known in one place: full TensorRT (``tensorrt``) and TensorRT-RTX (``tensorrt_rtx``).

Both expose the same Python API (Builder, OnnxParser, BuilderConfig, Runtime; the name-based tensor API), so the
build stages and the runtime backend are shared and take the imported module as ``trt``. What differs lives here:
the module and package to install, the minimum version, the network flags, and the options only one of them has.

- TensorRT builds for the GPU it runs on (a CUDA GPU is needed to build) and has a builder optimization level and a
  timing cache. Plans run on that GPU architecture only.
- TensorRT-RTX builds ahead of time without a GPU for a set of target compute capabilities (RTX-class GPUs: Turing
  to Blackwell; no sm90/sm100 datacenter parts) and compiles its kernels when the plan is loaded; those compiled
  kernels persist in a runtime cache. Its timing-cache calls are no-ops (deprecated in 1.2) and it has no
  optimization level of its own.

Nothing here imports either package at module level.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mtlora_deploy.errors import ConfigError, MissingDependencyError
from mtlora_deploy.utils.artifacts import PRECISIONS
from mtlora_deploy.utils.verbosity import quiet_libraries

if TYPE_CHECKING:
    import torch

TENSORRT, TENSORRT_RTX = "tensorrt", "tensorrt-rtx"
RUNTIMES = (TENSORRT, TENSORRT_RTX)
RUNTIME_CHOICES = ("auto", *RUNTIMES)
# TensorRT-RTX's documented default targets when none are set ("portable across 8.6, 8.9 and 12.0").
RTX_DEFAULT_TARGETS = ("8.6", "8.9", "12.0")
# Every target TensorRT-RTX 1.7 can build for (its ComputeCapability enum): RTX-class parts, no sm90/sm100.
RTX_TARGETS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
# TensorRT dtype attribute -> torch dtype name; looked up with getattr so older/newer releases simply lack some
# entries (names, so that the CLI's option lists load without torch).
_TORCH_DTYPES = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "bool": "bool",
    "fp8": "float8_e4m3fn",
}


@dataclass(frozen=True)
class Flavour:
    """One TensorRT flavour: what to import, what to install, what it offers."""

    name: str
    module: str
    title: str
    min_version: tuple[int, ...]
    install: str
    needs_gpu_to_build: bool
    has_targets: bool
    has_optimization_level: bool
    has_timing_cache: bool


FLAVOURS = {
    TENSORRT: Flavour(
        TENSORRT,
        "tensorrt",
        "TensorRT",
        (10, 0),
        "pip install 'mtlora-deploy[tensorrt]' (TensorRT 10.x/11.x wheels from NVIDIA's index)",
        True,
        False,
        True,
        True,
    ),
    TENSORRT_RTX: Flavour(
        TENSORRT_RTX,
        "tensorrt_rtx",
        "TensorRT-RTX",
        (1, 0),
        "pip install 'mtlora-deploy[tensorrt-rtx]' (tensorrt-rtx-cu13 from PyPI)",
        False,
        True,
        False,
        False,
    ),
}


def flavour(name: str) -> Flavour:
    """The flavour called ``name`` (``tensorrt`` or ``tensorrt-rtx``), or a one-line error."""
    if name not in FLAVOURS:
        raise ConfigError(f"got {name!r}, expected one of {', '.join(RUNTIME_CHOICES)}", field="runtime")
    return FLAVOURS[name]


def version_tuple(version: str) -> tuple[int, ...]:
    """``"10.13.0.35"`` -> ``(10, 13, 0, 35)``; a part like ``"0rc1"`` keeps its leading digits."""
    return tuple(int(m.group()) if (m := re.match(r"\d+", part)) else 0 for part in str(version).split("."))


def importable(name: str) -> bool:
    """True when the flavour's module can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(flavour(name).module) is not None
    except (ImportError, ValueError):
        return False


def load_runtime(name: str = TENSORRT):
    """Import the flavour's module or raise a one-line error saying what to install."""
    spec = flavour(name)
    try:
        trt = importlib.import_module(spec.module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"'{spec.module}' is not importable ({exc}); install it with: {spec.install}"
        ) from exc
    if version_tuple(trt.__version__)[: len(spec.min_version)] < spec.min_version:
        wanted = ".".join(map(str, spec.min_version))
        raise MissingDependencyError(
            f"{spec.title} {trt.__version__} is too old: the name-based tensor API needs "
            f"{wanted} or newer; install: {spec.install}"
        )
    return trt


def pick_runtime(requested: str = "auto", cuda_available: bool | None = None) -> str:
    """``auto``: TensorRT when importable and a CUDA GPU is present, else TensorRT-RTX when importable (it builds
    without a GPU), else a one-line error naming both installs. An explicit choice is returned as it is."""
    if requested != "auto":
        return flavour(requested).name
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if importable(TENSORRT) and cuda_available:
        return TENSORRT
    if importable(TENSORRT_RTX):
        return TENSORRT_RTX
    why = "tensorrt is importable but there is no CUDA GPU" if importable(TENSORRT) else "neither is importable"
    raise MissingDependencyError(
        f"`runtime` auto: no TensorRT to build with ({why}); install TensorRT-RTX (builds on a CPU-only machine): "
        f"{FLAVOURS[TENSORRT_RTX].install}, or on a machine with an NVIDIA GPU: {FLAVOURS[TENSORRT].install}",
        field="runtime",
    )


def runtime_of(trt) -> str:
    """The flavour name of an imported module (``tensorrt_rtx`` -> ``tensorrt-rtx``)."""
    return TENSORRT_RTX if trt.__name__.split(".")[0] == "tensorrt_rtx" else TENSORRT


def network_flags(trt) -> int:
    """``create_network`` flags: STRONGLY_TYPED on TensorRT 10.x (required since 10.12) and on TensorRT-RTX; 0 on
    TensorRT 11.x, which is strongly typed only (the flag is deprecated and ignored there)."""
    if runtime_of(trt) == TENSORRT and version_tuple(trt.__version__)[0] >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def torch_dtype(trt, trt_dtype) -> torch.dtype:
    """The torch dtype for a TensorRT ``DataType`` (fails with its name when there is none, e.g. int4/fp4)."""
    import torch

    for name, dtype in _TORCH_DTYPES.items():
        if getattr(trt, name, None) is not None and trt_dtype == getattr(trt, name):
            return getattr(torch, dtype)
    raise ConfigError(f"TensorRT tensor type {trt_dtype} has no torch equivalent for I/O; keep engine I/O in float32")


def dtype_name(trt, trt_dtype) -> str:
    """``trt.float16`` -> ``"float16"`` (the manifest's spelling)."""
    return str(torch_dtype(trt, trt_dtype)).replace("torch.", "")


# -- TensorRT-RTX target compute capabilities ----------------------------------------------------------------------
def parse_targets(text: str | None) -> tuple[str, ...]:
    """``"sm86,sm89,sm120"`` (or ``"8.6,12.0"``) -> ``("8.6", "8.9", "12.0")``; empty -> ()."""
    out = []
    for item in (text or "").replace(" ", "").split(","):
        if not item:
            continue
        match = re.fullmatch(r"(?:sm_?)?(\d+)(?:\.(\d))?", item.lower())
        if not match:
            raise ConfigError(f"got {item!r}, expected compute capabilities such as sm86,sm89,sm120", field="targets")
        major, minor = (match.group(1), match.group(2)) if match.group(2) else (match.group(1)[:-1], match.group(1)[-1])
        out.append(f"{int(major)}.{minor}")
    return tuple(dict.fromkeys(out))


def target_enum(trt, capability: str):
    """``"8.9"`` -> ``trt.ComputeCapability.SM89``, or a one-line error listing what this TensorRT-RTX offers."""
    name = "SM" + capability.replace(".", "")
    offered = [m for m in trt.ComputeCapability.__members__ if m.startswith("SM")]
    if name not in offered:
        listed = ", ".join(m.lower() for m in offered)
        raise ConfigError(
            f"TensorRT-RTX {trt.__version__} cannot build for {sm(capability)} "
            f"(it offers {listed}); datacenter GPUs such as H100 (sm90) need `runtime` tensorrt",
            field="targets",
        )
    return trt.ComputeCapability.__members__[name]


# -- which precision runs where: one table, read before anything is built ------------------------------------------
@dataclass(frozen=True)
class PrecisionSupport:
    """The lowest compute capability on which a flavour runs a precision, and where that comes from."""

    min_capability: str
    why: str


_AMPERE_WOQ = "the support matrix lists {what} weight-only GEMMs from Ampere (8.x), none on Turing"
# TensorRT-RTX 1.7: its support matrix (FP32/FP16/BF16/INT8 WoQ GEMM/INT4 WoQ GEMM/FP8/FP4 GEMM per GPU family) and
# what its builder refuses on this CPU ("Cannot compile for target(s) ..., because the model contains HW-specific
# datatypes: ..."). Full TensorRT builds on the GPU it runs on: the row is checked against that GPU.
PRECISION_SUPPORT: dict[tuple[str, str], PrecisionSupport] = {
    (TENSORRT_RTX, "fp32"): PrecisionSupport("7.5", "every RTX target"),
    (TENSORRT_RTX, "fp16"): PrecisionSupport("7.5", "every RTX target"),
    (TENSORRT_RTX, "bf16"): PrecisionSupport("8.0", "no BF16 on Turing; the builder refuses sm75 (b16)"),
    (TENSORRT_RTX, "int8"): PrecisionSupport("8.0", _AMPERE_WOQ.format(what="INT8")),
    (TENSORRT_RTX, "int8-wo"): PrecisionSupport("8.0", _AMPERE_WOQ.format(what="INT8")),
    (TENSORRT_RTX, "int4-wo"): PrecisionSupport(
        "8.0", _AMPERE_WOQ.format(what="INT4") + "; the builder refuses sm75 (int4)"
    ),
    (TENSORRT_RTX, "fp8"): PrecisionSupport(
        "8.9", "FP8 tensor cores: Ada (sm89) and Blackwell (sm120); the builder refuses older targets (fp8_e4m3)"
    ),
    (TENSORRT, "fp32"): PrecisionSupport("7.5", "every GPU TensorRT 10 supports"),
    (TENSORRT, "fp16"): PrecisionSupport("7.5", "every GPU TensorRT 10 supports"),
    (TENSORRT, "bf16"): PrecisionSupport("8.0", "BF16 from Ampere"),
    (TENSORRT, "int8"): PrecisionSupport("7.5", "INT8 tensor cores from Turing"),
    (TENSORRT, "int8-wo"): PrecisionSupport("8.0", "weight-only GEMM quantization from Ampere"),
    (TENSORRT, "int4-wo"): PrecisionSupport("8.0", "INT4 weight-only (W4A16) from Ampere"),
    (TENSORRT, "fp8"): PrecisionSupport("8.9", "FP8 tensor cores: Ada (sm89), Hopper (sm90) and later"),
}


def sm(capability: str) -> str:
    """``"8.9"`` -> ``"sm89"`` (the spelling of ``targets``)."""
    return "sm" + capability.replace(".", "")


def precision_support(runtime: str, precision: str) -> PrecisionSupport:
    """The table's row for ``precision`` on ``runtime`` (a one-line error for an unknown precision)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"got {precision!r}, expected one of {', '.join(PRECISIONS)}", field="precision")
    return PRECISION_SUPPORT[(flavour(runtime).name, precision)]


def runs_on(runtime: str, precision: str, capability: str) -> bool:
    """Whether ``runtime`` runs ``precision`` on a GPU of compute capability ``capability`` ("8.6")."""
    return version_tuple(capability) >= version_tuple(precision_support(runtime, precision).min_capability)


def rtx_targets(precision: str, offered: tuple[str, ...] = RTX_TARGETS) -> tuple[str, ...]:
    """The TensorRT-RTX targets that run ``precision``."""
    return tuple(t for t in offered if runs_on(TENSORRT_RTX, precision, t))


def default_targets(precision: str) -> tuple[str, ...]:
    """TensorRT-RTX targets when ``targets`` are not given: its portable set, less what cannot run ``precision``
    (fp8: sm89, sm120)."""
    return rtx_targets(precision, RTX_DEFAULT_TARGETS)


def check_precision_targets(precision: str, targets: tuple[str, ...]) -> None:
    """TensorRT-RTX: every target is one it builds for and runs ``precision``, or one line naming the ones that do."""
    if unknown := [t for t in targets if t not in RTX_TARGETS]:
        raise ConfigError(
            f"TensorRT-RTX cannot build for {','.join(sm(t) for t in unknown)} (it offers "
            f"{', '.join(sm(t) for t in RTX_TARGETS)}); datacenter GPUs such as H100 (sm90) need `runtime` tensorrt",
            field="targets",
        )
    refused = [t for t in targets if not runs_on(TENSORRT_RTX, precision, t)]
    if refused:
        row = precision_support(TENSORRT_RTX, precision)
        runs = ",".join(sm(t) for t in rtx_targets(precision))
        raise ConfigError(
            f"`precision` {precision} `targets` {','.join(sm(t) for t in refused)}: TensorRT-RTX runs {precision} "
            f"only on {runs} ({row.why}); build with `targets` {','.join(sm(t) for t in default_targets(precision))} "
            "or pick another precision",
            field="targets",
        )


def check_precision_gpu(precision: str, capability: str | None, gpu_name: str | None = None) -> None:
    """Full TensorRT builds for the GPU it runs on: that GPU runs ``precision``, or one line saying what does."""
    if capability is None or runs_on(TENSORRT, precision, capability):
        return
    row = precision_support(TENSORRT, precision)
    others = ", ".join(p for p in PRECISIONS if runs_on(TENSORRT, p, capability))
    raise ConfigError(
        f"`precision` {precision}: TensorRT runs it on compute capability {row.min_capability} and later "
        f"({row.why}); this GPU ({gpu_name or 'unknown'}) has {capability} and runs {others}",
        field="precision",
    )


# -- logging: TensorRT keeps the first logger it is given for the whole process ------------------------------------
@dataclass
class LogSink:
    """Where the shared logger's messages go for a while: warnings are printed unless the CLI is quiet (everything
    with ``verbose``), errors are kept for the one-line exception, and so is the layer list a DETAILED build logs
    (each layer's type, input types and tactic; readable without a GPU, so an ahead-of-time TensorRT-RTX plan can
    be inspected)."""

    title: str = "TensorRT"
    verbose: bool = False
    errors: list[str] = field(default_factory=list)
    layers: str = ""

    def write(self, level: int, severity: str, msg: str) -> None:
        if "LayerType:" in msg and msg.lstrip().startswith("Layers:"):
            self.layers = msg
        elif level <= 1:
            self.errors.append(" ".join(msg.split()))
            if self.verbose:
                print(f"[{self.title}] ERROR: {msg}", file=sys.stderr)
        elif level <= (4 if self.verbose else 1 if quiet_libraries() else 2):  # errors only: the CLI's quiet default
            print(f"[{self.title}] {severity}: {msg}", file=sys.stderr)


_LOGGERS: dict[str, object] = {}


def shared_logger(trt):
    """The process's one logger for this flavour. TensorRT registers the first logger a Builder/Runtime gets and
    ignores later ones ("the current new logger is ignored"), so a logger per build would lose every later build's
    messages; instead this one forwards to the sink set by ``capture_log``."""
    name = runtime_of(trt)
    if name not in _LOGGERS:
        title = FLAVOURS[name].title

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.sink = LogSink(title)

            def log(self, severity, msg) -> None:
                self.sink.write(int(severity), str(severity).rsplit(".", 1)[-1], str(msg))

        _LOGGERS[name] = _Logger()
    return _LOGGERS[name]


@contextlib.contextmanager
def capture_log(trt, verbose: bool = False) -> Iterator[LogSink]:
    """Route the flavour's messages to a fresh ``LogSink`` inside the block (the previous sink after it)."""
    logger = shared_logger(trt)
    previous, logger.sink = logger.sink, LogSink(FLAVOURS[runtime_of(trt)].title, verbose)
    try:
        yield logger.sink
    finally:
        logger.sink = previous
