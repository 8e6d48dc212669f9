"""One family of user-facing errors: the CLI prints them as one line and exits 1."""


class MTLoRAError(Exception):
    """Base class of every error a user can fix (bad option, bad file, missing package)."""


class ConfigError(MTLoRAError):
    """A config field, preset name or YAML file is invalid."""


class WeightsError(MTLoRAError):
    """A weight or checkpoint file does not fit the model it is loaded into."""


class DataError(MTLoRAError):
    """A dataset file is missing or unreadable."""


class MissingDependencyError(MTLoRAError):
    """An optional package (tensorrt, modelopt, ...) is needed but not installed."""


class OutputError(MTLoRAError):
    """An output could not be written (disk full, no permission, read-only filesystem); nothing is half-written.

    ``path`` is the output and ``reason`` the cause in words (``the disk is full [ENOSPC]``), for callers that
    write several files and name the whole output instead.
    """

    def __init__(self, message: str, path: object = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path, self.reason = path, reason


class ToolkitWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI prints it once, as one line."""


def warn(message: str) -> None:
    """Issue a :class:`ToolkitWarning` (library code says what matters; the CLI decides how it is shown)."""
    import warnings

    warnings.warn(message, ToolkitWarning, stacklevel=3)
