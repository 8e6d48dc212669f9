"""One family of user-facing errors: the CLI prints them as one line and exits 1."""


class MTLoRAError(Exception):
    """Base class of every error a user can fix (bad option, bad file, missing package).

    Library code speaks in its own words: ``field`` is the parameter or config field the error is about (``batch``,
    ``image_size``), and the message names it and any other field as `name` in backticks (``rebuild with a larger
    `batch` maximum``). A message that does not name ``field`` is prefixed with it (```batch`: got ...``). The CLI
    shows each name as the flag of the command that ran (:mod:`mtlora_deploy.cli.flags`), never the library.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        if field is not None and f"`{field}`" not in message:
            message = f"`{field}`: {message}"
        super().__init__(message)
        self.field = field


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

    def __init__(self, message: str, path: object = None, reason: str | None = None, field: str | None = None) -> None:
        super().__init__(message, field)
        self.path, self.reason = path, reason


class ToolkitWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI prints it once, as one line (its
    `name`s in backticks as the command's flags, like an error's)."""


def warn(message: str) -> None:
    """Issue a :class:`ToolkitWarning` (library code says what matters; the CLI decides how it is shown)."""
    import warnings

    warnings.warn(message, ToolkitWarning, stacklevel=3)
